"""bigvgan/: NSF-BigVGAN golden parity (weight norm kept and folded), loader, chunked vocoding, Griffin-Lim, CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from bigvgan.alias import SnakeAlias, UpSample1d, kaiser_sinc_filter
from bigvgan.generator_cpu import polyphase_weights, snake_alias_nwc
from bigvgan.griffinlim import griffinlim_vocode
from bigvgan.inference import main as cli_main
from bigvgan.model import Generator, GeneratorConfig, load_bigvgan, to_int16, vocode
from bigvgan.nsf import HarmonicSource, harmonic_phase_offset, upsample_f0
from common.checkpoint import CheckpointError
from common.config import load_config
from common.mel import mel_spectrogram
from common.windows import plan_windows
from golden import (
    REFERENCE,
    assert_close,
    atol,
    component_of,
    golden_cases,
    load_golden,
    write_official_checkpoint,
)

REPO = Path(__file__).resolve().parent.parent
MANIFEST = REFERENCE / "manifests" / "nsf_bigvgan_generator.json"


@pytest.fixture(scope="module")
def recipe_files(tmp_path_factory):
    """``recipe_files(base_seed, component, prefix)``: an official-format recipe checkpoint, written once each."""
    folder = tmp_path_factory.mktemp("bigvgan_ckpt")
    cache = {}

    def get(base_seed: int, component: str = "nsf_bigvgan_generator", prefix: str = ""):
        key = (base_seed, component, prefix)
        if key not in cache:
            cache[key] = write_official_checkpoint(component, folder / f"{component}_{base_seed}_{len(cache)}.pth",
                                                   base_seed, prefix)
        return cache[key]

    return get


def _golden_weights(recipe_files, meta):
    """The checkpoint of a golden file's weights: its manifest, base seed and key prefix."""
    w = meta["weights"]
    return recipe_files(w["base_seed"], component_of(meta), w.get("key_prefix_in_file") or "")


def _zero_draws(g):
    """The zero-noise runs: the original's two draws (initial phases, additive sine noise) patched to zeros, of the
    shapes the golden's provided-noise run has."""
    return torch.zeros(g["in_rand_ini"].shape), torch.zeros(g["in_sine_noise"].shape)


def _zero_noise(n_frames):
    return torch.zeros(1, 11), torch.zeros(1, 320 * n_frames, 11)


def _lsb(a, b):
    return int(np.abs(np.asarray(a, dtype=np.int64) - np.asarray(b, dtype=np.int64)).max())


# ---------------------------------------------------------------- golden parity (the original's code, recipe weights)
@pytest.mark.parametrize("path", golden_cases("bigvgan_generator"))
def test_golden_bigvgan_generator(path, recipe_files):
    g, meta = load_golden(path)
    model = load_bigvgan(_golden_weights(recipe_files, meta), fold_weight_norm=False)  # as gvc_inference.py
    assert any(name.endswith("weight_g") for name, _ in model.named_parameters())
    mel, f0 = torch.from_numpy(g["in_mel"]), torch.from_numpy(g["in_f0"])
    with torch.inference_mode():
        out = model.forward_intermediates(mel, f0, _zero_draws(g))
        pitch_wav = model.pitch2wav(f0, _zero_draws(g))
        noisy = model.forward_intermediates(mel, f0, (torch.from_numpy(g["in_rand_ini"]),
                                                      torch.from_numpy(g["in_sine_noise"])))
    for name in ("har_source", "conv_pre_out", "conv_post_out", "audio"):
        assert_close(out[name].numpy(), g[f"out_{name}"], atol(path, name, 2e-3), name)
    assert_close(noisy["audio"].numpy(), g["out_audio_provided_noise"],
                 atol(path, "audio_provided_noise", 2e-3), "audio_provided_noise")
    assert_close(noisy["har_source"].numpy(), g["out_har_source_provided_noise"],
                 atol(path, "har_source", 5e-5), "har_source_provided_noise")
    int16 = to_int16(out["audio"][0, 0]).numpy()
    assert int16.dtype == np.int16 and int16.shape == g["out_audio_int16"].shape
    assert _lsb(int16, g["out_audio_int16"]) <= atol(path, "audio_int16", 67), "audio_int16"
    # the excitation in int16: its float tolerance times 32768, rounded up
    pitch_lsb = int(np.ceil(atol(path, "har_source", 5e-5) * 32768))
    assert pitch_wav.dtype == torch.int16 and pitch_wav.shape == (1, g["out_pitch_wav_int16"].shape[0])
    assert _lsb(pitch_wav[0].numpy(), g["out_pitch_wav_int16"]) <= pitch_lsb, "pitch_wav_int16"


@pytest.mark.parametrize("path", golden_cases("bigvgan_generator"))
def test_golden_bigvgan_generator_weight_norm_folded(path, recipe_files):
    g, meta = load_golden(path)
    model = load_bigvgan(_golden_weights(recipe_files, meta))  # default: folded
    names = [name for name, _ in model.named_parameters()]
    assert not any(n.endswith(("weight_g", "weight_v")) for n in names) and "conv_pre.weight" in names
    mel, f0 = torch.from_numpy(g["in_mel"]), torch.from_numpy(g["in_f0"])
    with torch.inference_mode():
        audio = model(mel, f0, _zero_draws(g))
        noisy = model(mel, f0, (torch.from_numpy(g["in_rand_ini"]), torch.from_numpy(g["in_sine_noise"])))
    assert_close(audio.numpy(), g["out_audio"], atol(path, "audio", 2e-3), "audio (folded)")
    assert_close(noisy.numpy(), g["out_audio_provided_noise"], atol(path, "audio_provided_noise", 2e-3),
                 "audio_provided_noise (folded)")


# ---------------------------------------------------------------- architecture = the official file's format
def test_state_dict_matches_manifest_and_constants():
    manifest = json.loads(MANIFEST.read_text())
    own = Generator().state_dict()
    expected = {k: tuple(v["shape"]) for k, v in manifest["state_dict"].items()}
    assert {k: tuple(v.shape) for k, v in own.items()} == expected
    # the constant buffers our constructor computes equal the official values
    for key, entry in manifest["state_dict"].items():
        if "value" in entry:
            value = torch.tensor(entry["value"], dtype=torch.float32).view(entry["shape"])
            assert torch.allclose(own[key], value, atol=1e-7, rtol=0), key
    assert torch.equal(kaiser_sinc_filter(0.25, 0.3, 12), own["activation_post.upsample.filter"])


@pytest.mark.parametrize("ratio,kernel", [(2, 12), (3, 12), (2, 10)])
def test_polyphase_upsample_equals_the_originals_transposed_conv(ratio, kernel):
    """UpSample1d is the original's transposed conv, and the CPU path's polyphase taps give its output phase by
    phase (an ordinary FIR per phase over the replicate-padded input)."""
    up = UpSample1d(ratio, kernel)
    w, d_min, d_max = polyphase_weights(up)
    for length in (1, 2, 5, 33):
        x = torch.randn(2, 3, length)
        # the original (alias-free-torch): ratio * conv_transpose1d(replicate pad, filter, stride=ratio), cropped
        ref = ratio * F.conv_transpose1d(F.pad(x, (up.pad, up.pad), mode="replicate"),
                                         up.filter.expand(3, -1, -1), stride=ratio, groups=3)
        ref = ref[..., up.crop_left: ref.shape[-1] - up.crop_right]
        assert up(x).shape == ref.shape == (2, 3, ratio * length)
        assert torch.allclose(up(x), ref, atol=1e-6)
        xp = F.pad(x, (-d_min, d_max), mode="replicate")
        for phase in range(ratio):
            fir = F.conv1d(xp, w[phase].view(1, 1, -1).expand(3, -1, -1), groups=3)
            assert torch.allclose(fir, ref[..., phase::ratio], atol=1e-6)


def test_snake_alias_inference_path_equals_autograd_path():
    torch.manual_seed(0)
    act = SnakeAlias(6)
    with torch.no_grad():
        act.act.alpha.normal_()
        act.act.beta.normal_()
    x = torch.randn(2, 6, 37, requires_grad=True)
    y = act(x)  # out-of-place path (grad enabled)
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    with torch.inference_mode():
        y_fast = act(x.detach())  # in-place path
    assert y.shape == (2, 6, 37)
    assert torch.allclose(y.detach(), y_fast, atol=1e-6)


@pytest.mark.parametrize("ratio,kernel", [(2, 12), (3, 12), (2, 10)])
def test_channels_last_snake_alias_equals_the_module(ratio, kernel):
    """The CPU path's polyphase SnakeAlias on (B, L, C) equals the module (upsample, SnakeBeta, downsample) on
    (B, C, L), edges included, for long signals (interior read in place) and short ones (padded whole)."""
    torch.manual_seed(1)
    act = SnakeAlias(5, ratio, kernel)
    with torch.no_grad():
        act.act.alpha.normal_()
        act.act.beta.normal_()
    for length in (1, 3, 40, 301):
        x = torch.randn(2, 5, length)
        with torch.inference_mode():
            ref = act(x)
            fast = snake_alias_nwc(act, x.transpose(1, 2).contiguous())
        assert fast.shape == (2, length, 5)
        torch.testing.assert_close(fast.transpose(1, 2), ref, rtol=0, atol=2e-6)


def test_generator_fast_cpu_path_equals_the_reference_path(small_generator):
    """decode on the CPU inference path (channels-last, polyphase resampling) equals the module path, every output,
    batch of 2, weight norm kept or folded."""
    torch.manual_seed(2)
    unfolded = Generator(GeneratorConfig(upsample_initial_channel=64)).eval()
    with torch.no_grad():
        for name, p in unfolded.named_parameters():
            p.normal_(0, 0.3 if name.endswith((".alpha", ".beta")) else 0.05)
    mel = torch.randn(2, 100, 23)
    for model in (small_generator, unfolded):
        har = torch.randn(2, 23 * 320, 1) * 0.1
        with torch.inference_mode():
            fast = model.decode(mel, har)
            model.fast_cpu = False
            try:
                ref = model.decode(mel, har)
            finally:
                model.fast_cpu = True
        for key in ref:
            assert fast[key].shape == ref[key].shape, key
            assert (fast[key] - ref[key]).abs().max() <= 1e-5 * ref[key].abs().max(), key
        assert ref["audio"].std() > 1e-4  # not a trivial output


def test_to_int16_truncates_and_clamps():
    x = torch.tensor([-1.5, -1.0, -0.99999, -0.5, 0.0, 0.5, 0.99999, 1.0, 2.0])
    expected = [-32768, -32768, -32767, -16384, 0, 16384, 32767, 32767, 32767]
    out = to_int16(x)
    assert out.dtype == torch.int16 and out.tolist() == expected


def test_generator_shapes_and_input_checks():
    torch.manual_seed(0)
    model = Generator(GeneratorConfig(upsample_initial_channel=64)).eval()
    mel, f0 = torch.randn(2, 100, 5), torch.full((2, 5), 150.0)
    with torch.inference_mode():
        out = model.forward_intermediates(mel, f0, generator=torch.Generator().manual_seed(1))
    assert out["audio"].shape == (2, 1, 1600) and out["har_source"].shape == (2, 1600, 1)
    assert out["conv_pre_out"].shape == (2, 64, 5) and out["conv_post_out"].shape == (2, 1, 1600)
    assert out["audio"].abs().max() < 1
    with pytest.raises(ValueError, match="f0 must be"):
        model(mel, f0[:, :4])
    with pytest.raises(ValueError, match="mel must be"):
        model(mel[:, :80], f0)
    with pytest.raises(ValueError, match="noise shapes"):
        model(mel, f0, (torch.zeros(2, 11), torch.zeros(2, 1599, 11)))
    with pytest.raises(ValueError, match="hop_length"):
        GeneratorConfig.from_data_config(load_config(overrides=["data.hop_length=160"]).data)


# ---------------------------------------------------------------- loader
def test_loader_errors(tmp_path, recipe_files):
    with pytest.raises(CheckpointError, match=r"nope\.pth: pretrained file not found; download it from .*NSF-BigVGAN"):
        load_bigvgan(tmp_path / "nope.pth")
    ckpt = torch.load(recipe_files(1234), weights_only=True)
    state = dict(ckpt["model_g"])
    del state["resblocks.4.convs2.1.weight_v"]
    torch.save({"model_g": state, "model_d": {"x": torch.zeros(1)}}, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"missing\.pth: missing 1 keys .*resblocks\.4\.convs2\.1\.weight_v"):
        load_bigvgan(tmp_path / "missing.pth")
    torch.save(ckpt["model_g"], tmp_path / "flat.pth")  # a bare state dict is not the official container
    with pytest.raises(CheckpointError, match=r"flat\.pth: .*no 'model_g' entry"):
        load_bigvgan(tmp_path / "flat.pth")
    state = dict(ckpt["model_g"])
    state["conv_post.weight"] = torch.zeros(1, 5, 5)
    torch.save({"model_g": state}, tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match=r"shape\.pth: shape mismatch .*conv_post\.weight"):
        load_bigvgan(tmp_path / "shape.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk\.pth: cannot load checkpoint"):
        load_bigvgan(tmp_path / "junk.pth")


# ---------------------------------------------------------------- long inputs
def test_plan_windows_cover_every_frame():
    for n, chunk, overlap in [(1, 10, 4), (100, 30, 8), (100, 25, 8), (95, 30, 8), (64, 32, 32)]:
        windows = plan_windows(n, chunk, overlap)
        assert windows[0].start == 0 and windows[-1].end == n
        for a, b in zip(windows, windows[1:]):
            assert a.end == b.start and b.end - b.start >= overlap  # a short tail joins the previous core
            assert a.win_end == min(n, a.end + overlap) and b.win_start == b.start - overlap
    assert [w.end for w in plan_windows(95, 30, 8)] == [30, 60, 95]  # 5 leftover frames < overlap: merged
    with pytest.raises(ValueError, match="at least the overlap"):
        plan_windows(100, 8, 16)


def test_harmonic_phase_continues_across_chunks():
    src = HarmonicSource()
    f0 = torch.tensor([[0.0, 0.0, 180.0, 185.0, 190.0, 0.0, 440.0, 441.5, 1000.0, 0.0, 230.0, 231.0]])
    rand_ini = torch.rand(1, 11)
    whole = src.sines(upsample_f0(f0, 320), rand_ini)
    parts = [
        src.sines(upsample_f0(f0[:, a:b], 320), rand_ini, harmonic_phase_offset(f0[:, :a], 320, 11, 32000))
        for a, b in [(0, 3), (3, 7), (7, 12)]
    ]
    joined = torch.cat(parts, dim=1)
    assert joined.shape == whole.shape == (1, 12 * 320, 11)
    assert (joined - whole).abs().max() < 1e-5  # amplitude 0.1: phase error < 2e-5 cycles
    # without the offset the phase would jump at the seams
    assert (src.sines(upsample_f0(f0[:, 3:7], 320), rand_ini) - whole[:, 960:2240]).abs().max() > 1e-2


@pytest.fixture(scope="module")
def small_generator():
    """The official layout with 64 instead of 320 channels (same kernels, hence the same receptive field)."""
    torch.manual_seed(0)
    model = Generator(GeneratorConfig(upsample_initial_channel=64)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith((".alpha", ".beta")):
                p.normal_(0, 0.3)
    return model.remove_weight_norm()


def _song(n_frames):
    mel = torch.sin(torch.arange(n_frames)[None] / 7.0 + torch.arange(100)[:, None] / 9.0) * 2 - 5
    f0 = torch.where(torch.arange(n_frames) % 40 < 28, 180.0 + torch.arange(n_frames).float(), torch.tensor(0.0))
    return mel, f0


def test_vocode_chunked_equals_unchunked(small_generator):
    mel, f0 = _song(130)  # chunk 40, overlap 32: cores [0, 40), [40, 80), [80, 130) (the 10-frame tail is merged)
    whole = vocode(small_generator, mel, f0, chunk=1000, overlap=32, add_noise=False)
    chunked = vocode(small_generator, mel, f0, chunk=40, overlap=32, add_noise=False)
    assert whole.dtype == np.float32 and whole.shape == chunked.shape == (130 * 320,)
    assert whole.std() > 1e-3
    with torch.inference_mode():
        direct = small_generator(mel[None], f0[None], _zero_noise(130))[0, 0].numpy()
    assert np.abs(whole - direct).max() < 1e-6
    assert np.abs(chunked - whole).max() < 1e-4  # seams included: the receptive field tail beyond 16 frames is tiny
    # the source noise is drawn in fixed blocks over the song and the phases continue: chunking changes nothing
    noisy_whole = vocode(small_generator, mel, f0, chunk=1000, noise_generator=torch.Generator().manual_seed(3))
    noisy_chunked = vocode(small_generator, mel, f0, chunk=40, noise_generator=torch.Generator().manual_seed(3))
    assert np.abs(noisy_chunked - noisy_whole).max() < 1e-4
    assert np.abs(noisy_whole - whole).max() > 1e-3


def test_vocode_batched_windows_equal_one_at_a_time(small_generator):
    """batch > 1 renders equal-length windows together with the noise and sine phases each gets alone."""
    mel, f0 = _song(250)  # chunk 40, overlap 32: windows of 72, 104 x 4, 82 frames
    from common.windows import group_equal

    assert [len(g) for g in group_equal(plan_windows(250, 40, 32), 3)] == [1, 3, 1, 1]
    one = vocode(small_generator, mel, f0, chunk=40, noise_generator=torch.Generator().manual_seed(4))
    batched = vocode(small_generator, mel, f0, chunk=40, noise_generator=torch.Generator().manual_seed(4), batch=3)
    assert batched.shape == one.shape == (250 * 320,)
    assert np.abs(batched - one).max() <= 1e-5 * np.abs(one).max()


def test_vocode_silence_and_empty(small_generator):
    silent = torch.full((100, 20), float(np.log(1e-5)))
    out = vocode(small_generator, silent, torch.zeros(20), chunk=10, overlap=4)
    assert out.shape == (20 * 320,) and np.isfinite(out).all()
    assert vocode(small_generator, silent[:, :0], torch.zeros(0)).shape == (0,)
    with pytest.raises(ValueError, match="vocode expects"):
        vocode(small_generator, silent, torch.zeros(19))


# ---------------------------------------------------------------- Griffin-Lim fallback
def _tone(seconds=0.8, sr=32000):
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 660 * t)).astype(np.float32)


def test_griffinlim_length_finite_and_close():
    data = load_config().data
    mel = mel_spectrogram(torch.from_numpy(_tone()))
    out = griffinlim_vocode(mel, data, n_iter=16, chunk=40, overlap=16)
    assert out.dtype == np.float32 and out.shape == (mel.shape[1] * 320,) and np.isfinite(out).all()
    back = mel_spectrogram(torch.from_numpy(out))
    # a preview: the mel of the result follows the input (timing included) on the frames away from the edges
    assert (back - mel)[:, 3:-3].abs().mean() < 0.5
    silent = griffinlim_vocode(np.full((100, 20), np.log(1e-5), dtype=np.float32), data, n_iter=4)
    assert silent.shape == (6400,) and np.isfinite(silent).all() and np.abs(silent).max() < 1e-2
    with pytest.raises(ValueError, match="expects a log-mel"):
        griffinlim_vocode(mel[:80], data)


# ---------------------------------------------------------------- the command line
def test_cli_griffinlim_and_errors(tmp_path, capsys, caplog):
    mel = mel_spectrogram(torch.from_numpy(_tone(0.4)))  # 40 frames
    torch.save(mel, tmp_path / "x.mel.pt")
    np.save(tmp_path / "x.pit.npy", np.full(43, 220.0))
    out = tmp_path / "gl.wav"
    cli_main(["--mel", str(tmp_path / "x.mel.pt"), "--pit", str(tmp_path / "x.pit.npy"), "--out", str(out),
              "--vocoder", "griffinlim"])
    wav, sr = sf.read(out, dtype="int16")
    assert sr == 32000 and wav.shape == (40 * 320,)
    assert "using the first 40" in caplog.text
    with pytest.raises(SystemExit, match=r"nope\.pth: pretrained file not found"):
        cli_main(["--mel", str(tmp_path / "x.mel.pt"), "--pit", str(tmp_path / "x.pit.npy"), "--out", str(out),
                  "--model", str(tmp_path / "nope.pth"), "--device", "cpu"])
    torch.save(mel[:80], tmp_path / "bad.mel.pt")
    with pytest.raises(SystemExit, match=r"bad\.mel\.pt: mel must have shape \(100, T\)"):
        cli_main(["--mel", str(tmp_path / "bad.mel.pt"), "--pit", str(tmp_path / "x.pit.npy"), "--out", str(out)])
    (tmp_path / "bad.csv").write_text("0m 0s   0,abc\n")
    with pytest.raises(SystemExit, match=r"bad\.csv:1: bad pitch row"):
        cli_main(["--mel", str(tmp_path / "x.mel.pt"), "--pit", str(tmp_path / "bad.csv"), "--out", str(out)])


def test_cli_bigvgan_subprocess(tmp_path, recipe_files):
    mel = mel_spectrogram(torch.from_numpy(_tone(0.3)))
    n = mel.shape[1]
    torch.save(mel, tmp_path / "x.mel.pt")
    rows = [f"0m 0s {10 * i:3d},{200 + i:.1f}" for i in range(n - 2)]  # a CSV 2 frames shorter than the mel
    (tmp_path / "x.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out.wav"
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("GVC_TEST_THREADS", "2"))
    proc = subprocess.run(
        [sys.executable, "bigvgan/inference.py", "--mel", str(tmp_path / "x.mel.pt"), "--pit", str(tmp_path / "x.csv"),
         "--out", str(out), "--model", str(recipe_files(1234)), "--device", "cpu", "--seed", "0"],
        cwd=REPO, capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"using the first {n - 2}" in proc.stderr
    wav, sr = sf.read(out, dtype="int16")
    assert sr == 32000 and wav.shape == ((n - 2) * 320,) and np.abs(wav).max() > 0

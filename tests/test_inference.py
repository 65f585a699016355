"""gvc_inference.py end to end with recipe-made official-format checkpoints for every model (real weights cannot be
had here), the step-by-step flow, windowing, and every kind of bad input."""

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from svc_features import cut_song, random_singer

from common.audio import load_audio
from conversion import align, companion_paths, crossfade_weights, shift_f0, windows
from golden import cached_official_checkpoint, golden_dir
from grad.noise import PositionalNoise
from gvc_inference import main

REPO = Path(__file__).resolve().parent.parent
CORPUS_SONG = Path(__file__).parent / "fixtures" / "corpus" / "kal" / "scale.wav"
STEPS = "2"
SONG: Path  # 1.6 s cut of the corpus song, written by the ckpts fixture


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    global SONG
    tmp = tmp_path_factory.mktemp("inference")
    SONG = cut_song(CORPUS_SONG, tmp / "song.wav", 0.5, 2.1)
    (tmp / "singer").mkdir()
    spk = random_singer(tmp / "singer" / "alto.spk.npy")
    return {
        "gvc": cached_official_checkpoint("gvc_v3"),
        "bigvgan": cached_official_checkpoint("nsf_bigvgan_generator"),
        "hubert": cached_official_checkpoint("hubert_soft", prefix="module."),
        "spk": spk,
        "tmp": tmp,
    }


def args(c, *extra):
    return ["--model", c["gvc"], "--spk", c["spk"], "--vocoder_model", c["bigvgan"], "--hubert_model", c["hubert"],
            "--steps", STEPS, "--no_png", *extra]


def run_main(argv):
    return main([str(a) for a in argv])


def test_cli_end_to_end_and_seed_reproduces_bit_for_bit(ckpts, tmp_path):
    out = tmp_path / "converted.wav"
    res = subprocess.run([sys.executable, "gvc_inference.py", *map(str, args(ckpts, "--wave", SONG, "--out", out,
                                                                              "--seed", "7"))],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    wav, sr = sf.read(out, dtype="int16")
    assert sr == 32000
    n16 = sf.info(SONG).frames
    # one output frame per 10 ms; units are 20 ms, so the output is at most one unit frame shorter than the input
    assert 0 <= n16 / 16000 - len(wav) / sr < 0.02 + 1e-9
    assert np.abs(wav).max() > 0
    pitch_wav, png = companion_paths(out)
    assert sf.info(pitch_wav).frames == len(wav) and not png.exists()  # --no_png
    # the same seed again (in-process this time): identical samples
    out2 = tmp_path / "again.wav"
    assert run_main(args(ckpts, "--wave", SONG, "--out", out2, "--seed", "7")) == 0
    assert np.array_equal(sf.read(out2, dtype="int16")[0], wav)
    out3 = tmp_path / "other_seed.wav"
    assert run_main(args(ckpts, "--wave", SONG, "--out", out3, "--seed", "8")) == 0
    assert not np.array_equal(sf.read(out3, dtype="int16")[0], wav)


def test_step_by_step_flow_uses_the_edited_files(ckpts, tmp_path):
    vec, csv = tmp_path / "test.vec.npy", tmp_path / "test.csv"
    for cmd in (["hubert/inference.py", "-w", SONG, "-v", vec, "--model", ckpts["hubert"]],
                ["pitch/inference.py", "-w", SONG, "-p", csv]):
        res = subprocess.run([sys.executable, *map(str, cmd)], cwd=REPO, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
    out = tmp_path / "step.wav"
    assert run_main(args(ckpts, "--wave", SONG, "--vec", vec, "--pit", csv, "--out", out, "--seed", "1")) == 0
    base = sf.read(out, dtype="int16")[0]
    # edit the CSV as a user would (all voiced frames an octave up): the F0 check wav follows the edit
    lines = csv.read_text().splitlines()
    edited = []
    for line in lines:
        t, f = line.split(",")[:2]
        edited.append(f"{t},{float(f) * 2:.1f}")
    csv.write_text("\n".join(edited) + "\n")
    out2 = tmp_path / "edited.wav"
    assert run_main(args(ckpts, "--wave", SONG, "--vec", vec, "--pit", csv, "--out", out2, "--seed", "1")) == 0
    assert len(sf.read(out2)[0]) == len(base)
    from pitch.f0 import compute_f0

    f0s = []
    for path in (companion_paths(out)[0], companion_paths(out2)[0]):
        wav = load_audio(path, 16000)
        f0s.append(compute_f0(wav, 16000))
    both = (f0s[0] > 0) & (f0s[1] > 0)
    assert both.sum() > 20 and abs(np.median(f0s[1][both] / f0s[0][both]) - 2.0) < 0.05  # the edit was used


def test_pitch_file_shorter_or_longer_is_aligned_with_a_warning(ckpts, tmp_path, caplog):
    vec50 = np.zeros((100, 256), np.float32)
    short = np.full(150, 200.0)
    vec, f0 = align(vec50, short, "short.csv")
    assert len(vec) == len(f0) == 200 and (f0[150:] == 0).all()
    assert "padded with unvoiced frames" in caplog.text
    vec, f0 = align(vec50, np.full(260, 200.0), "long.csv")
    assert len(f0) == 200 and "cut" in caplog.text
    # our own F0 track (3 frames longer) is cut silently to the shorter, as the original
    caplog.clear()
    vec, f0 = align(vec50, np.full(203, 200.0))
    assert len(f0) == 200 and not caplog.text


def test_windows_cover_every_frame_and_crossfades_sum_to_one():
    for n in (1, 37, 2400, 2408, 2409, 4808, 5000, 7300):
        ws = windows(n, 2400, 8)
        covered = np.zeros(n)
        total = np.zeros(n)
        for s, e in ws:
            covered[s:e] = 1
            total[s:e] += crossfade_weights(s, e, n, 8)
        # the original lost the last frame (docs/conventions.md#window-plan)
        assert covered.all() and np.allclose(total, 1.0), n


def test_golden_inference_chunking():
    """The original's windows (``gvc_inference_chunking.json`` of the vector set: its ``main()`` run on a
    pass-through model) are ours; where its loop then lost the last frame (or 8), ours keeps every frame."""
    path = golden_dir() / "gvc_inference_chunking.json"
    if not path.is_file():
        pytest.skip(f"no {path}")
    results = json.loads(path.read_text())["results"]
    two = next((r["chunk_calls"] for r in results if len(r["chunk_calls"]) > 1), None)
    if two is None:
        pytest.skip(f"{path}: no input long enough for two windows, so the window size is not recorded")
    # the first two windows are [0, chunk + context) and [chunk - context, ...)
    end, start = two[0]["last_frame"] + 1, two[1]["first_frame"]
    chunk, context = (end + start) // 2, (end - start) // 2
    for r in results:
        n = r["n_frames"]
        theirs = [(c["first_frame"], c["last_frame"] + 1) for c in r["chunk_calls"]]
        assert windows(n, chunk, context) == theirs, n
        assert r["output_frames"] + len(r["missing_frames"]) == n, n  # what the original's cropping lost
        total = np.zeros(n)
        for s, e in theirs:
            total[s:e] += crossfade_weights(s, e, n, context)
        assert np.allclose(total, 1.0), n  # ours: every frame, weights summing to one


def test_positional_noise_does_not_depend_on_the_window():
    noise = PositionalNoise(3)
    like = torch.zeros(1)
    whole = noise.at(0).randn((1, 100, 300), like)
    part = noise.at(130).randn((1, 100, 100), like)
    assert torch.equal(whole[..., 130:230], part)
    w = noise.at(0)
    first, second = w.randn((1, 100, 50), like), w.randn((1, 100, 50), like)
    assert not torch.equal(first, second)  # successive draws are independent streams


def test_windowed_acoustic_model_matches_one_pass_away_from_seams(ckpts):
    from conversion import Converter

    conv = Converter(str(ckpts["gvc"]), vocoder="griffinlim")
    rng = np.random.default_rng(0)
    n = 240
    vec = np.repeat(rng.standard_normal((n // 2, 256)).astype(np.float32), 2, axis=0)
    f0 = np.where(np.arange(n) % 50 < 40, 220.0, 0.0)
    spk = np.load(ckpts["spk"])
    one = conv.acoustic(vec, f0, spk, steps=2, seed=5)
    conv.cfg.infer.out_chunk, conv.cfg.infer.hop_frame = 80, 8
    chunked = conv.acoustic(vec, f0, spk, steps=2, seed=5)
    assert one.shape == chunked.shape == (100, n)
    seams = np.zeros(n, bool)
    for s in (80, 160):
        seams[s - 16: s + 16] = True
    diff = (one - chunked).abs().numpy()
    # same noise per frame; what differs is the encoder's context (attention, per-window instance norm)
    assert diff[:, ~seams].mean() < 0.1 * one.abs().mean().item(), diff[:, ~seams].mean()
    assert np.isfinite(chunked.numpy()).all()


def test_batched_windows_give_the_sequential_output(ckpts):
    """--batch N runs equal-length windows together; each window gets the noise and padding it gets alone, so the
    mel equals the one-window-at-a-time mel (to float rounding of batched matrix products)."""
    from common.windows import group_equal
    from conversion import Converter

    conv = Converter(str(ckpts["gvc"]), vocoder="griffinlim")
    conv.cfg.infer.out_chunk, conv.cfg.infer.hop_frame = 80, 8
    n = 400  # windows of 88, 96, 96, 96, 88 frames: batches [w0], [w1, w2, w3], [w4] with --batch 3
    assert [len(g) for g in group_equal(windows(n, 80, 8), 3, length=lambda w: w[1] - w[0])] == [1, 3, 1]
    rng = np.random.default_rng(1)
    vec = np.repeat(rng.standard_normal((n // 2, 256)).astype(np.float32), 2, axis=0)
    f0 = np.where(np.arange(n) % 60 < 45, 196.0, 0.0)
    spk = np.load(ckpts["spk"])
    one = conv.acoustic(vec, f0, spk, steps=2, seed=9)
    conv.batch = 3
    batched = conv.acoustic(vec, f0, spk, steps=2, seed=9)
    torch.testing.assert_close(batched, one, rtol=0, atol=2e-5 * float(one.abs().max()))
    assert not torch.equal(one, conv.acoustic(vec, f0, spk, steps=2, seed=10))  # the seed matters


def test_silent_input_gives_finite_output(ckpts, tmp_path):
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000, np.float32), 16000)
    out = tmp_path / "silent_out.wav"
    assert run_main(args(ckpts, "--wave", silent, "--out", out, "--seed", "1")) == 0
    wav = sf.read(out)[0]
    assert np.isfinite(wav).all() and len(wav) == 32000


def test_any_format_rate_and_channels(ckpts, tmp_path):
    x, sr = sf.read(SONG, dtype="float32")
    import librosa

    stereo = np.stack([librosa.resample(x, orig_sr=sr, target_sr=44100)] * 2, axis=1)
    src = tmp_path / "stereo.flac"
    sf.write(src, stereo, 44100, subtype="PCM_24")
    out = tmp_path / "flac_out.wav"
    assert run_main(args(ckpts, "--wave", src, "--out", out, "--seed", "1")) == 0
    assert abs(len(sf.read(out)[0]) / 32000 - len(x) / sr) < 0.03


def test_folder_mode_converts_all_and_reports_failures(ckpts, tmp_path, capsys):
    songs = tmp_path / "songs"
    (songs / "sub").mkdir(parents=True)
    x, sr = sf.read(SONG, dtype="float32")
    sf.write(songs / "a.wav", x[: sr // 2], sr)
    sf.write(songs / "sub" / "b.ogg", x[: sr // 2], sr, format="OGG", subtype="VORBIS")
    (songs / "broken.wav").write_bytes(b"not audio at all")
    out = tmp_path / "converted"
    assert run_main(args(ckpts, "--wave", songs, "--out", out, "--seed", "1")) == 1
    assert (out / "a.wav").is_file() and (out / "sub" / "b.wav").is_file()
    captured = capsys.readouterr()
    assert "converted 2 of 3" in captured.out and "broken.wav" in captured.err


def test_mel_images_rendered_beside_each_converted_song(ckpts, tmp_path):
    """Without --no_png every converted song gets its mel image; a song that fails gets none."""
    songs = tmp_path / "songs"
    songs.mkdir()
    x, sr = sf.read(SONG, dtype="float32")
    sf.write(songs / "a.wav", x[: sr // 2], sr)
    sf.write(songs / "c.wav", x[: sr // 3], sr)
    (songs / "broken.wav").write_bytes(b"not audio at all")
    out = tmp_path / "converted"
    argv = [a for a in args(ckpts, "--wave", songs, "--out", out, "--seed", "1") if a != "--no_png"]
    assert run_main(argv) == 1
    for name in ("a", "c"):
        png = companion_paths(out / f"{name}.wav")[1]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    assert sorted(p.name for p in out.iterdir()) == ["a.mel.png", "a.wav", "c.mel.png", "c.wav"]


BAD_CASES = {
    "missing wave": (lambda c, t: ["--wave", t / "nope.wav"], "file not found"),
    "corrupt wave": (lambda c, t: ["--wave", _write(t / "corrupt.wav", b"RIFF\x00\x00\x00\x00WAVEfmt ")],
                     "not readable as audio"),
    "text as wave": (lambda c, t: ["--wave", _write(t / "lyrics.wav", b"la la la\n")], "not readable as audio"),
    "spk wrong size": (lambda c, t: ["--wave", SONG, "--spk", _npy(t / "bad.spk.npy", np.zeros(192, np.float32))],
                       "shape (256,)"),
    "spk other backend": (lambda c, t: ["--wave", SONG, "--spk", _tagged_spk(t)], "speaker encoder"),
    "absurd shift": (lambda c, t: ["--wave", SONG, "--shift", "40"], "--shift 40"),
    "v2 checkpoint with v3 config": (lambda c, t: ["--wave", SONG, "--model", _v2_ckpt(c, t), "--config",
                                                   REPO / "configs" / "base.yaml"], "v2 checkpoint"),
    "v2 with temperature 0": (lambda c, t: ["--wave", SONG, "--model", _v2_ckpt(c, t), "--temperature", "0"],
                              "--temperature 0"),
    "negative temperature": (lambda c, t: ["--wave", SONG, "--temperature", "-1"], "--temperature -1"),
    "sampler of the other decoder": (lambda c, t: ["--wave", SONG, "--sampler", "ml"], "--sampler"),
    "negative steps": (lambda c, t: ["--wave", SONG, "--steps", "-1"], "--steps -1"),
    "unknown f0 method": (lambda c, t: ["--wave", SONG, "--f0", "crepe_tiny"], "--f0 crepe_tiny"),
    "nan spk weight": (lambda c, t: ["--wave", SONG, "--spk_weights", "nan"], "--spk_weights"),
    "bad backend.json": (lambda c, t: ["--wave", SONG, "--spk", _tagged_spk(t, "{}")], "backend.json"),
    "pitch csv with a bad row": (lambda c, t: ["--wave", SONG, "--pit", _write(t / "bad.csv", b"0m 0s   0,abc\n")],
                                 "bad.csv"),
    "text as pitch npy": (lambda c, t: ["--wave", SONG, "--pit", _write(t / "bad.npy", b"220\n")], "bad.npy"),
    "units of another song": (lambda c, t: ["--wave", SONG, "--vec", _npy(t / "x.vec.npy", np.zeros((20, 256),
                                                                                                  np.float32))],
                              "units of another song"),
    "units with nan": (lambda c, t: ["--wave", SONG, "--vec", _npy(t / "n.vec.npy", np.full((80, 256), np.nan,
                                                                                           np.float32))],
                       "NaN"),
    "out is a folder": (lambda c, t: ["--wave", SONG, "--out", t], "names a folder"),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _npy(path: Path, arr: np.ndarray) -> Path:
    np.save(path, arr)
    return path


def _tagged_spk(tmp: Path, tag: str = json.dumps({"backend": "resemblyzer", "dim": 256})) -> Path:
    folder = tmp / "resemblyzer_singers"
    folder.mkdir(exist_ok=True)
    (folder / "backend.json").write_text(tag)
    return _npy(folder / "x.spk.npy", np.full(256, 0.06, np.float32))


def _v2_ckpt(c, tmp: Path) -> Path:
    from common.config import load_config, to_dict

    sd = torch.load(c["gvc"], map_location="cpu", weights_only=True)["model"]
    path = tmp / "ours_v2.pth"
    torch.save({"model": sd, "config": to_dict(load_config(REPO / "configs" / "v2.yaml")), "version": "v2"}, path)
    return path


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_inputs_give_one_line_errors(case, ckpts, tmp_path, capsys):
    make, expected = BAD_CASES[case]
    extra = make(ckpts, tmp_path)
    argv = args(ckpts, "--out", tmp_path / "o.wav")
    # later flags win in argparse: the case's --spk / --model replace the defaults
    assert run_main(argv + extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and expected in err[0], err
    assert not (tmp_path / "o.wav").exists()


def test_shift_semantics():
    f0 = np.array([0.0, 100.0, 200.0])
    assert np.allclose(shift_f0(f0, 12), [0, 200, 400]) and np.allclose(shift_f0(f0, -12), [0, 50, 100])
    with pytest.raises(ValueError):
        shift_f0(f0, float("nan"))


def test_folder_mode_resumes_and_keeps_songs_of_the_same_name(ckpts, tmp_path, capsys):
    """Folder mode is resumable (songs whose output exists are skipped; --overwrite converts them again) and a.wav
    next to a.flac gives two outputs, not one overwritten by the other."""
    songs = tmp_path / "songs"
    songs.mkdir()
    x, sr = sf.read(SONG, dtype="float32")
    sf.write(songs / "a.wav", x[: sr // 2], sr)
    sf.write(songs / "a.flac", x[sr // 2: sr], sr)
    out = tmp_path / "converted"
    assert run_main(args(ckpts, "--wave", songs, "--out", out, "--seed", "1")) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a_flac.wav", "a_wav.wav"]
    first = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert not np.array_equal(sf.read(out / "a_wav.wav")[0], sf.read(out / "a_flac.wav")[0])
    capsys.readouterr()
    assert run_main(args(ckpts, "--wave", songs, "--out", out, "--seed", "1")) == 0
    assert "converted 0 of 2" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == first
    assert run_main(args(ckpts, "--wave", songs, "--out", out, "--seed", "1", "--overwrite")) == 0
    assert "converted 2 of 2" in capsys.readouterr().out
    assert all(p.stat().st_mtime_ns > first[p.name] for p in out.iterdir())


def test_infer_window_settings_are_checked():
    from common.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="infer.out_chunk"):
        load_config(overrides=["infer.out_chunk=10", "infer.hop_frame=8"])
    with pytest.raises(ConfigError, match="infer.vocoder_chunk"):
        load_config(overrides=["infer.vocoder_chunk=0"])


class _Terminal(io.StringIO):
    """A stderr that says it is a terminal (tqdm then draws its bars)."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("tty", [True, False])
def test_progress_bars_per_stage_on_a_terminal_only(ckpts, tmp_path, monkeypatch, tty):
    err = _Terminal() if tty else io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    assert run_main(args(ckpts, "--wave", SONG, "--out", tmp_path / "o.wav", "--seed", "1")) == 0
    text = err.getvalue()
    # the totals: one window each, the acoustic model's window times its steps (tqdm draws "0/total" on creation)
    bars = {"units": "/1 ", "F0": "/1 ", "acoustic model": f"/{STEPS} ", "vocoder": "/1 "}
    for desc, count in bars.items():
        shown = [line for line in text.replace("\r", "\n").splitlines() if line.startswith(desc)]
        if tty:
            assert any(count in line for line in shown), (desc, text)
        else:
            assert not shown, (desc, text)


def test_folder_mode_shows_songs_done_out_of_total(ckpts, tmp_path, monkeypatch):
    songs = tmp_path / "songs"
    songs.mkdir()
    x, sr = sf.read(SONG, dtype="float32")
    for name in ("a", "b", "c"):
        sf.write(songs / f"{name}.wav", x[: sr // 2], sr)
    err = _Terminal()
    monkeypatch.setattr(sys, "stderr", err)
    assert run_main(args(ckpts, "--wave", songs, "--out", tmp_path / "out", "--seed", "1")) == 0
    lines = [line for line in err.getvalue().replace("\r", "\n").splitlines() if line.startswith("convert")]
    assert any("3/3" in line for line in lines) and any("1/3" in line for line in lines), err.getvalue()


def test_pitch_wav_in_windows_is_the_whole_song_excitation(ckpts):
    """The F0 check wav is rendered in windows (bounded memory) and equals the whole-song pitch2wav bit for bit."""
    from bigvgan.model import load_bigvgan, pitch_wav

    gen = load_bigvgan(ckpts["bigvgan"])
    rng = np.random.default_rng(3)
    f0 = np.where(rng.random(701) > 0.3, 90 + 500 * rng.random(701), 0.0)  # voiced and unvoiced runs
    f0_t = torch.from_numpy(f0).float()
    whole = gen.pitch2wav(f0_t[None], generator=torch.Generator().manual_seed(5))[0].numpy()
    for chunk in (1, 97, 700, 2400):  # a window per frame, seams anywhere, one window
        assert np.array_equal(pitch_wav(gen, f0_t, torch.Generator().manual_seed(5), chunk=chunk), whole), chunk
    assert not np.array_equal(pitch_wav(gen, f0_t, torch.Generator().manual_seed(6), chunk=97), whole)

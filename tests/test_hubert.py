"""HuBERT-soft: golden parity through the official-format loader, chunking, frame counts, loader errors, CLIs.

The recipe checkpoint (95M parameters) takes ~30 s to fill, so the two official-format files (with and without the
``module.`` prefix) are cached by ``golden.cached_official_checkpoint``, keyed by the manifest, the recipe code and
the base seed; a changed manifest or recipe gives a new file.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from common.audio import load_audio
from common.checkpoint import CheckpointError
from golden import (
    assert_close,
    atol,
    cached_official_checkpoint,
    component_of,
    fill_recipe,
    golden_cases,
    load_golden,
    manifest_path,
)
from hubert.model import HOP, UNIT_DIM, compute_units, load_hubert, norm0_stats

REPO = Path(__file__).resolve().parent.parent
MANIFEST = manifest_path("hubert_soft")


@lru_cache(maxsize=1)
def _recipe_state(base_seed: int) -> dict[str, torch.Tensor]:
    fr = fill_recipe()
    return fr.fill_state_dict(fr.load_manifest(str(MANIFEST)), base_seed)


def _default_seed() -> int:
    return int(fill_recipe().load_manifest(str(MANIFEST))["recipe"]["base_seed"])


@pytest.fixture(scope="module")
def recipe_file():
    """``recipe_file(base_seed, prefix)`` -> path of an official-format file (flat state dict, ``prefix`` + key)."""

    def get(base_seed: int, prefix: str, component: str = "hubert_soft") -> Path:
        return cached_official_checkpoint(component, base_seed, prefix)

    return get


@pytest.fixture(scope="module")
def models(recipe_file):
    """``models(base_seed, prefix, component)`` -> ``HubertSoft`` loaded by ``load_hubert`` from the recipe file
    (by default the ``module.``-prefixed one, as the official file may be)."""
    loaded = {}

    def get(base_seed: int, prefix: str = "module.", component: str = "hubert_soft"):
        key = (base_seed, prefix, component)
        if key not in loaded:
            loaded[key] = load_hubert(recipe_file(base_seed, prefix, component))
        return loaded[key]

    return get


@pytest.fixture(scope="module")
def model(models):
    return models(_default_seed())


def _song(seconds: float, extra: int = 0, seed: int = 0) -> np.ndarray:
    """A sung-like tone with vibrato and a little noise, 16 kHz, peak ~0.4."""
    n = int(seconds * 16000) + extra
    t = np.arange(n) / 16000
    phase = 2 * np.pi * np.cumsum(220 * 2 ** (0.3 * np.sin(2 * np.pi * 0.7 * t))) / 16000
    noise = 0.01 * np.random.default_rng(seed).standard_normal(n)
    return (0.3 * np.sin(phase) + 0.1 * np.sin(2 * phase) + noise).astype(np.float32)


@pytest.mark.parametrize("path", golden_cases("hubert_units"))
def test_golden_hubert_units(path, models):
    g, meta = load_golden(path)
    w = meta["weights"]  # the weights the golden was made with, in the file layout it was loaded from
    model = models(int(w["base_seed"]), w.get("key_prefix_in_file") or "", component_of(meta))
    wav = torch.from_numpy(g["in_wav"])
    with torch.inference_mode():
        features = model.features(wav)
        projected = model.feature_projection(features.transpose(1, 2))
        encoded = model.encode(wav)
    assert_close(features.numpy(), g["out_features"], atol(path, "features", 2e-4), "features")
    assert_close(projected.numpy(), g["out_projected"], atol(path, "projected", 1e-4), "projected")
    assert_close(encoded.numpy(), g["out_encoder_out"], atol(path, "encoder_out", 1e-4), "encoder_out")
    # units through the library entry point (which calls HubertSoft.units)
    for b in range(wav.shape[0]):
        assert_close(compute_units(model, g["in_wav"][b, 0]), g["out_units"][b], atol(path, "units", 1e-4), "units")
    for n, frames in g["out_frame_counts"]:
        out = compute_units(model, np.zeros(int(n), np.float32))
        assert out.shape == (frames, g["out_units"].shape[-1]) and out.dtype == np.float32, f"N={n}"
        assert np.isfinite(out).all()


def test_load_without_prefix_gives_same_weights(model, recipe_file):
    plain = load_hubert(recipe_file(_default_seed(), ""))
    assert not plain.training
    ours = model.state_dict()
    theirs = plain.state_dict()
    assert ours.keys() == theirs.keys() and len(ours) == 166
    for k, v in ours.items():
        assert torch.equal(v, theirs[k]), k


def _tiny_state(model, drop: str | None = None, prefix: str = "") -> dict[str, torch.Tensor]:
    return {prefix + k: torch.zeros(1) for k in model.state_dict() if k != drop}


def test_load_missing_key_names_it(model, tmp_path):
    path = tmp_path / "missing.pt"
    torch.save(_tiny_state(model, drop="encoder.layers.7.linear2.bias", prefix="module."), path)
    with pytest.raises(CheckpointError) as err:
        load_hubert(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg
    assert "missing 1 keys" in msg and "encoder.layers.7.linear2.bias" in msg


def test_load_shape_mismatch_and_wrong_container(model, tmp_path):
    path = tmp_path / "shapes.pt"
    torch.save(_tiny_state(model), path)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_hubert(path)
    torch.save({"model": _tiny_state(model)}, path)  # nested container: not the official flat format
    with pytest.raises(CheckpointError, match="not a HuBERT-soft state dict"):
        load_hubert(path)


def test_load_missing_file_one_line(tmp_path):
    path = tmp_path / "nope" / "hubert-soft-0d54a1f4.pt"
    with pytest.raises(CheckpointError) as err:
        load_hubert(path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(path)) and "pretrained file not found" in msg
    assert "hubert_pretrain/hubert-soft-0d54a1f4.pt" in msg


@contextlib.contextmanager
def _local_model(model, half_width: int = 8):
    """Make every unit depend on nearby samples only (restored afterwards).

    Zeroing each attention output projection leaves the per-frame parts of the transformer; zeroing the weight-norm
    magnitudes of all positional-conv taps but the central ``2 * half_width`` shrinks that conv's reach from
    +-64 to +-``half_width`` frames. Unit k then sees samples [320 (k - half_width) - 40, 320 (k + half_width) + 360).
    """
    conv = model.positional_embedding.conv
    saved = [layer.self_attn.out_proj.weight.detach().clone() for layer in model.encoder.layers]
    saved_g = conv.weight_g.detach().clone()
    try:
        with torch.no_grad():
            for layer in model.encoder.layers:
                layer.self_attn.out_proj.weight.zero_()
            conv.weight_g[..., : 64 - half_width] = 0.0
            conv.weight_g[..., 64 + half_width:] = 0.0
        yield model
    finally:
        with torch.no_grad():
            for layer, w in zip(model.encoder.layers, saved):
                layer.self_attn.out_proj.weight.copy_(w)
            conv.weight_g.copy_(saved_g)


def test_chunked_equals_single_pass_when_context_covers_receptive_field(model):
    # With the recipe's random weights attention is nearly uniform, so every unit depends on the whole input and
    # any limited context changes all frames. With a local model (receptive field +-8 frames plus the CNN's 40
    # samples) and 0.2 s (10 frames) of context, windows must agree with one pass everywhere: the first and last
    # frames, the seams, the samples past the last full frame, and the first norm's whole-signal statistics.
    wav = _song(2.0, extra=123)
    with _local_model(model):
        single = compute_units(model, wav, chunk_seconds=100.0)
        assert single.shape == (wav.shape[0] // HOP, UNIT_DIM) == (100, UNIT_DIM)
        chunked = compute_units(model, wav, chunk_seconds=0.62, context_seconds=0.2)  # seams at 31, 62, 93
        assert_close(chunked, single, 5e-5, "chunked")
        # too little context must show, and only near the seams: the test can tell windows from a single pass
        short = compute_units(model, wav, chunk_seconds=0.5, context_seconds=0.02)  # seams at 25, 50, 75
        err = np.abs(short - single).max(axis=1)
        near_seam = np.abs((np.arange(100) + 12) % 25 - 12) < 9
        assert err[near_seam].max() > 1e-3 and err[~near_seam].max() < 5e-5
    restored = compute_units(model, wav[:16000])
    assert np.abs(restored - single[:50]).max() > 1e-2  # the weights are back


def test_chunk_windows_with_full_attention(model):
    # context longer than the input: every window is the whole signal, so only the cropping is exercised
    wav = _song(1.0, extra=200)
    single = compute_units(model, wav, chunk_seconds=100.0)
    chunked = compute_units(model, wav, chunk_seconds=0.4, context_seconds=1.5)
    assert_close(chunked, single, 5e-5, "cropped windows")


def test_norm0_stats_match_whole_signal(model):
    wav = _song(2.0)
    x = torch.from_numpy(wav)[None, None]
    with torch.inference_mode():
        stats = norm0_stats(model, wav, torch.device("cpu"), piece_frames=7)
        whole = model.features(x)
        window = model.features(x[..., 16000:28800], stats)  # frames 50..90 of the whole signal
        whole_streamed = model.features(x, stats)
    assert_close(whole_streamed.numpy(), whole.numpy(), 5e-5, "features with streamed stats")
    # interior frames of a window normalised with the whole signal's statistics equal the single pass
    assert_close(window[..., 1:-1].numpy(), whole[..., 51:89].numpy(), 5e-5, "window features")


@pytest.mark.parametrize("n", [0, 1, 319, 320, 359, 360, 639, 640, 3240, 9955])
def test_frame_counts(model, n):
    wav = _song(0.0, extra=n, seed=n)
    for chunk_seconds in (20.0, 0.2):  # one pass, and windows of 10 frames
        out = compute_units(model, wav, chunk_seconds=chunk_seconds, context_seconds=0.02)
        assert out.shape == (n // HOP, UNIT_DIM) and out.dtype == np.float32
        assert np.isfinite(out).all()


def test_silent_and_invalid_input(model):
    silent = compute_units(model, np.zeros(16000, np.float32))
    assert silent.shape == (50, UNIT_DIM) and np.isfinite(silent).all()
    tiny = compute_units(model, np.full(3200, 1e-12, np.float32), chunk_seconds=0.1)
    assert np.isfinite(tiny).all()
    with pytest.raises(ValueError, match="mono"):
        compute_units(model, np.zeros((2, 16000), np.float32))
    with pytest.raises(ValueError, match="chunk_seconds"):
        compute_units(model, np.zeros(16000, np.float32), chunk_seconds=0.0)


def test_inference_cli(model, recipe_file, tmp_path):
    # 32 kHz stereo in, resampled to 16 kHz by the CLI
    wav32 = np.stack([_song(1.0), _song(1.0, seed=1)], axis=1).repeat(2, axis=0) * 0.5
    src = tmp_path / "test.wav"
    sf.write(src, wav32, 32000)
    out = tmp_path / "sub" / "test.vec.npy"
    ckpt = recipe_file(_default_seed(), "module.")
    cmd = [sys.executable, "hubert/inference.py", "-w", str(src), "-v", str(out), "--model", str(ckpt),
           "--device", "cpu"]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    units = np.load(out)
    wav16 = load_audio(src, 16000)
    assert units.shape == (wav16.shape[0] // HOP, UNIT_DIM) == (50, UNIT_DIM) and units.dtype == np.float32
    assert_close(units, compute_units(model, wav16), 1e-4, "CLI units")
    assert [p.name for p in out.parent.iterdir()] == ["test.vec.npy"]  # no temporary left behind



def test_inference_cli_missing_checkpoint(tmp_path, capsys):
    from hubert import inference

    src = tmp_path / "test.wav"
    sf.write(src, _song(0.5), 16000)
    with pytest.raises(SystemExit) as exit_info:
        inference.main(["-w", str(src), "-v", str(tmp_path / "x.vec.npy"), "--model", str(tmp_path / "none.pt")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "pretrained file not found" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.vec.npy").exists()


def test_preprocess_hubert(model, recipe_file, tmp_path, capsys):
    from prepare import preprocess_hubert

    waves, vecs = tmp_path / "waves-16k", tmp_path / "hubert"
    for singer, seconds in (("alto", 0.5), ("bass", 0.7)):
        (waves / singer).mkdir(parents=True)
        sf.write(waves / singer / f"{singer}_1.wav", _song(seconds), 16000, subtype="PCM_16")
    (waves / "bass" / "broken.wav").write_bytes(b"RIFF not audio")
    ckpt = str(recipe_file(_default_seed(), "module."))

    # missing checkpoint: exit 2 before any work
    with pytest.raises(SystemExit) as exit_info:
        preprocess_hubert.main(["-w", str(waves), "-v", str(vecs), "--model", str(tmp_path / "none.pt")])
    assert exit_info.value.code == 2 and not vecs.exists()

    args = ["-w", str(waves), "-v", str(vecs), "--model", ckpt, "--device", "cpu", "-t", "1"]
    with pytest.raises(SystemExit) as exit_info:
        preprocess_hubert.main(args)
    assert exit_info.value.code == 1
    assert "FAILED" in capsys.readouterr().err
    alto = np.load(vecs / "alto" / "alto_1.vec.npy")
    bass = np.load(vecs / "bass" / "bass_1.vec.npy")
    assert alto.shape == (25, UNIT_DIM) and bass.shape == (35, UNIT_DIM) and alto.dtype == np.float32
    assert not (vecs / "bass" / "broken.vec.npy").exists()
    pcm = load_audio(waves / "alto" / "alto_1.wav", 16000)
    assert_close(alto, compute_units(model, pcm), 1e-4, "preprocessed units")

    # resumable: with the bad file gone the rerun skips the done files and succeeds
    (waves / "bass" / "broken.wav").unlink()
    stamp = (vecs / "alto" / "alto_1.vec.npy").stat().st_mtime_ns
    preprocess_hubert.main(args)
    assert (vecs / "alto" / "alto_1.vec.npy").stat().st_mtime_ns == stamp
    assert "2 already done" in capsys.readouterr().err

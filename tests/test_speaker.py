"""speaker/: LSTM encoder golden parity, front end, resemblyzer for real, backend tags, the two prepare commands."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from common.audio import load_audio
from common.checkpoint import CheckpointError
from golden import assert_close, atol, component_of, golden_cases, load_golden, write_official_checkpoint
from prepare import preprocess_speaker, preprocess_speaker_ave
from speaker import frontend
from speaker.backends import (
    SilentAudioError,
    check_backend,
    check_voice,
    load_speaker_backend,
    read_backend_tag,
    write_backend_tag,
)
from speaker.frontend import prepare_wav, sound_norm, spk_melspectrogram, wav_to_spk_mel
from speaker.lstm import LSTMSpeakerEncoder, load_lstm_encoder

REPO = Path(__file__).resolve().parent.parent
CORPUS = Path(__file__).parent / "fixtures" / "corpus"


def run(*args):
    # one file each: a single intra-op thread avoids OpenMP spin-waiting on the shared 2-core machine
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=env)


@pytest.fixture(scope="module")
def resemblyzer():
    return load_speaker_backend("resemblyzer")


@pytest.fixture(scope="module")
def recipe_ckpt(tmp_path_factory):
    return write_official_checkpoint("speaker_lstm", tmp_path_factory.mktemp("spk") / "best_model.pth.tar", 1234)


# ---------------------------------------------------------------- golden parity (the original's code, recipe weights)
@pytest.mark.parametrize("path", golden_cases("speaker_lstm"))
def test_golden_speaker_lstm(path, tmp_path):
    g, meta = load_golden(path)
    w = meta["weights"]
    ckpt = write_official_checkpoint(component_of(meta), tmp_path / "best_model.pth.tar", w["base_seed"],
                                     w.get("key_prefix_in_file") or "")
    # our front end is the original's with its one audio config: the golden must have been made with that one
    audio = meta["audio_config"]
    assert (audio["sample_rate"], audio["fft_size"], audio["hop_length"], audio["win_length"], audio["num_mels"],
            audio["mel_fmin"], audio["mel_fmax"], audio["preemphasis"], audio["trim_db"], audio["ref_level_db"],
            audio["min_level_db"], audio["max_norm"]) == (
        frontend.SAMPLE_RATE, frontend.N_FFT, frontend.HOP, frontend.WIN, frontend.N_MELS, frontend.FMIN,
        frontend.FMAX, frontend.PREEMPHASIS, frontend.TRIM_DB, frontend.REF_LEVEL_DB, frontend.MIN_LEVEL_DB,
        frontend.MAX_NORM)
    backend = load_speaker_backend("lstm", ckpt)  # load_lstm_encoder inside
    model = backend.model
    assert isinstance(model, LSTMSpeakerEncoder) and not model.training
    emb_short = model.inference(torch.from_numpy(g["in_mel_short"]))
    assert emb_short.shape == g["out_emb_short"].shape
    assert_close(emb_short.numpy(), g["out_emb_short"], atol(path, "emb_short", 5e-6), "emb_short")
    assert_close(prepare_wav(g["in_wav"]), g["out_wav_trimmed_normed"], 1e-6, "wav_trimmed_normed")
    mel = wav_to_spk_mel(g["in_wav"])
    assert mel.dtype == np.float32 and mel.shape[0] == g["out_spk_mel"].shape[0]
    assert_close(mel, g["out_spk_mel"], atol(path, "spk_mel", 2e-4), "spk_mel")
    # the whole .spk.npy pipeline from the raw 16 kHz wav, through the backend the prepare command uses
    spk = backend.embed(g["in_wav"])
    assert spk.dtype == np.float32 and spk.shape == g["out_spk_embed"].shape
    assert_close(spk, g["out_spk_embed"], atol(path, "spk_embed", 1e-6), "spk_embed")
    assert np.linalg.norm(spk) < 1.0  # a mean of unit vectors, not re-normalised


# ---------------------------------------------------------------- LSTM encoder and loader
def test_compute_embedding_windows():
    torch.manual_seed(0)
    model = LSTMSpeakerEncoder(lstm_dim=16).eval()  # small: the windowing does not depend on the sizes
    short = torch.randn(40, 80)
    assert torch.allclose(model.compute_embedding(short), model.inference(short[None])[0], atol=1e-6)
    for total in (300, 252):  # 10 distinct windows; repeated offsets 0,0,0,0,0,1,1,1,1,2
        mel = torch.randn(1, total, 80)
        offsets = [int(o) for o in np.linspace(0, total - 250, 10)]
        expected = torch.stack([model.inference(mel[:, o:o + 250])[0] for o in offsets]).mean(0)
        out = model.compute_embedding(mel)
        assert out.shape == (256,) and torch.allclose(out, expected, atol=1e-6)
    assert torch.allclose(model.inference(mel).norm(dim=1), torch.ones(1))
    with pytest.raises(ValueError, match="expects mel"):
        model.compute_embedding(torch.randn(2, 300, 80))


def test_loader_errors(tmp_path, recipe_ckpt):
    with pytest.raises(CheckpointError, match="pretrained file not found.*download"):
        load_lstm_encoder(tmp_path / "best_model.pth.tar")
    sd = torch.load(recipe_ckpt, weights_only=True)["model"]
    # the original's loader also accepts 'model_state' and a flat state dict
    for container in ({"model_state": sd}, sd):
        torch.save(container, tmp_path / "other.pth")
        assert isinstance(load_lstm_encoder(tmp_path / "other.pth"), LSTMSpeakerEncoder)
    torch.save({"model": {k: v for k, v in sd.items() if k != "layers.2.linear.weight"}}, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match="missing 1 keys.*layers.2.linear.weight"):
        load_lstm_encoder(tmp_path / "missing.pth")
    torch.save({"model": {**sd, "layers.0.linear.weight": torch.zeros(128, 768)}}, tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_lstm_encoder(tmp_path / "shape.pth")
    torch.save({"model": sd, "config": argparse.Namespace(lr=1)}, tmp_path / "pickled.pth")
    with pytest.raises(CheckpointError, match="weights_only"):
        load_lstm_encoder(tmp_path / "pickled.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="not a speaker-encoder checkpoint"):
        load_lstm_encoder(tmp_path / "list.pth")


# ---------------------------------------------------------------- front end
def test_frontend_shapes_and_silence():
    rng = np.random.default_rng(0)
    wav = (0.3 * np.sin(2 * np.pi * 200 * np.arange(16000) / 16000) + 0.01 * rng.standard_normal(16000))
    x = prepare_wav(wav.astype(np.float32))
    assert x.dtype == np.float32 and abs(np.abs(x).max() - 0.95) < 1e-6
    assert x.shape[0] <= 16000 - 320
    mel = spk_melspectrogram(x)
    assert mel.shape == (80, 1 + x.shape[0] // 256) and mel.dtype == np.float32
    assert mel.min() >= -4.0 and mel.max() <= 4.0
    silent = sound_norm(np.zeros(1000, np.float32))
    assert np.all(silent == 0)  # the original divided by zero here
    assert np.isfinite(wav_to_spk_mel(np.zeros(4000, np.float32))).all()


def test_check_voice():
    with pytest.raises(SilentAudioError, match="silent: no voice to embed"):
        check_voice(np.zeros(16000, np.float32))
    with pytest.raises(SilentAudioError):
        check_voice(np.full(16000, 5e-5, np.float32))  # below -80 dBFS
    with pytest.raises(ValueError, match="mono"):
        check_voice(np.zeros((2, 100), np.float32))
    with pytest.raises(ValueError, match="unknown speaker backend"):
        load_speaker_backend("xvector")


# ---------------------------------------------------------------- resemblyzer, for real
def test_resemblyzer_same_voice_closer(resemblyzer):
    kal_a = resemblyzer.embed(load_audio(CORPUS / "kal" / "march.wav", 16000))
    kal_b = resemblyzer.embed(load_audio(CORPUS / "kal" / "scale.wav", 16000))
    ked_a = resemblyzer.embed(load_audio(CORPUS / "ked" / "march.wav", 16000))  # same melody, other voice
    for e in (kal_a, kal_b, ked_a):
        assert e.shape == (256,) and e.dtype == np.float32 and np.isfinite(e).all()
        assert abs(np.linalg.norm(e) - 1.0) < 1e-4
    assert resemblyzer.name == "resemblyzer" and resemblyzer.dim == 256
    assert float(kal_a @ kal_b) > float(kal_a @ ked_a) + 0.03
    with pytest.raises(SilentAudioError):
        resemblyzer.embed(np.zeros(32000, np.float32))
    # a short loud clip that voice detection drops whole (a steady tone) is embedded untrimmed, not refused
    t = np.arange(8000) / 16000
    tone = resemblyzer.embed((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))
    assert tone.shape == (256,) and np.isfinite(tone).all() and abs(np.linalg.norm(tone) - 1.0) < 1e-4


# ---------------------------------------------------------------- backend tags
def test_backend_tags(tmp_path):
    root = tmp_path / "speaker"
    (root / "alto").mkdir(parents=True)
    assert read_backend_tag(root / "alto" / "x.spk.npy") is None
    assert check_backend(root, "lstm") is None  # untagged (the original's files) passes
    tag = write_backend_tag(root, "resemblyzer")
    assert json.loads(tag.read_text()) == {"backend": "resemblyzer", "dim": 256}
    assert read_backend_tag(root) == "resemblyzer"
    assert read_backend_tag(root / "alto" / "x.spk.npy") == "resemblyzer"  # walks up to the nearest tag
    assert check_backend(root / "alto", "resemblyzer") == "resemblyzer"
    with pytest.raises(ValueError, match="'resemblyzer', but 'lstm'"):
        check_backend(root / "alto" / "x.spk.npy", "lstm", "speaker vectors")
    (root / "alto" / "backend.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a valid speaker backend tag"):
        read_backend_tag(root / "alto")
    with pytest.raises(ValueError, match="unknown speaker backend"):
        write_backend_tag(root, "xvector")
    # a tag two folders up (say one speaker/inference.py left in a working folder) governs nothing below
    deep = tmp_path / "work" / "data_gvc" / "speaker_new"
    deep.mkdir(parents=True)
    write_backend_tag(tmp_path / "work", "resemblyzer")
    assert read_backend_tag(deep) is None and read_backend_tag(deep / "alto" / "x.spk.npy") is None
    assert read_backend_tag(tmp_path / "work" / "data_gvc") == "resemblyzer"  # the folder just below: covered


# ---------------------------------------------------------------- singer average
def _singer_tree(root: Path, backend: str | None = "lstm") -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    base = rng.standard_normal(256).astype(np.float32)
    vecs = {
        "alto/a": base + 0.1 * rng.standard_normal(256).astype(np.float32),
        "alto/b": base + 0.1 * rng.standard_normal(256).astype(np.float32),
        "alto/far": rng.standard_normal(256).astype(np.float32),
        "bass/c": rng.standard_normal(256).astype(np.float32),
    }
    for key, v in vecs.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        np.save(root / f"{key}.spk.npy", v)
    if backend:
        write_backend_tag(root, backend)
    return vecs


def test_speaker_ave_mean_and_tag(tmp_path):
    spk, out = tmp_path / "speaker", tmp_path / "singer"
    vecs = _singer_tree(spk)
    assert preprocess_speaker_ave.main([str(spk), str(out)]) == 0
    alto = np.load(out / "alto.spk.npy")
    assert alto.dtype == np.float32 and alto.shape == (256,)
    expected = (vecs["alto/a"] + vecs["alto/b"] + vecs["alto/far"]) / np.float32(3)
    np.testing.assert_allclose(alto, expected, atol=1e-6)
    np.testing.assert_array_equal(np.load(out / "bass.spk.npy"), vecs["bass/c"])
    assert read_backend_tag(out) == "lstm"
    for key, v in vecs.items():  # per-file vectors untouched by default
        np.testing.assert_array_equal(np.load(spk / f"{key}.spk.npy"), v)


def test_speaker_ave_replace_close(tmp_path):
    spk, out = tmp_path / "speaker", tmp_path / "singer"
    vecs = _singer_tree(spk)
    assert preprocess_speaker_ave.main([str(spk), str(out), "--replace_close", "0.85"]) == 0
    mean = np.load(out / "alto.spk.npy")
    for key in ("alto/a", "alto/b"):  # close to the mean: overwritten, as the original does
        np.testing.assert_array_equal(np.load(spk / f"{key}.spk.npy"), mean)
    np.testing.assert_array_equal(np.load(spk / "alto/far.spk.npy"), vecs["alto/far"])
    # a singer with one file has cos = 1 to its own mean: rewritten with an identical vector
    np.testing.assert_array_equal(np.load(spk / "bass/c.spk.npy"), vecs["bass/c"])
    # the encoder's vectors are kept beside the rewritten ones, so a rerun gives the same singer mean
    np.testing.assert_array_equal(np.load(spk / "alto/a.spk.orig.npy"), vecs["alto/a"])
    assert preprocess_speaker_ave.main([str(spk), str(out), "--replace_close", "0.85"]) == 0
    np.testing.assert_array_equal(np.load(out / "alto.spk.npy"), mean)


def test_speaker_ave_refuses_mixing_and_reports_bad_files(tmp_path, capsys):
    spk, out = tmp_path / "speaker", tmp_path / "singer"
    _singer_tree(spk)
    write_backend_tag(spk / "bass", "resemblyzer")
    assert preprocess_speaker_ave.main([str(spk), str(out)]) == 2
    assert "different speaker backends" in capsys.readouterr().err
    assert not out.exists()
    (spk / "bass" / "backend.json").unlink()
    write_backend_tag(out, "resemblyzer")
    assert preprocess_speaker_ave.main([str(spk), str(out)]) == 2
    assert "'resemblyzer', but 'lstm'" in capsys.readouterr().err
    (out / "backend.json").unlink()
    np.save(spk / "bass" / "bad.spk.npy", np.zeros(128, np.float32))
    assert preprocess_speaker_ave.main([str(spk), str(out)]) == 1
    err = capsys.readouterr().err
    assert "bad.spk.npy: a speaker embedding has shape (256,)" in err
    assert (out / "alto.spk.npy").is_file() and not (out / "bass.spk.npy").exists()


# ---------------------------------------------------------------- the commands, as a user runs them
@pytest.fixture
def waves16(tmp_path):
    root = tmp_path / "waves-16k"
    (root / "kal").mkdir(parents=True)
    wav, sr = sf.read(CORPUS / "kal" / "scale.wav", dtype="int16")
    sf.write(root / "kal" / "scale.wav", wav[: int(2.0 * sr)], sr, subtype="PCM_16")
    sf.write(root / "kal" / "silent.wav", np.zeros(sr, np.int16), sr, subtype="PCM_16")
    (root / "kal" / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 10)
    return root


def test_preprocess_speaker_cli(waves16, tmp_path):
    out, singer = tmp_path / "speaker", tmp_path / "singer"
    r = run("prepare/preprocess_speaker.py", waves16, out, "--backend", "resemblyzer")
    assert r.returncode == 1, r.stderr
    assert "1 processed, 0 already done, 2 failed" in r.stderr
    assert "silent.wav: silent: no voice to embed" in r.stderr
    assert "corrupt.wav: not readable as audio" in r.stderr
    emb = np.load(out / "kal" / "scale.spk.npy")
    assert emb.dtype == np.float32 and emb.shape == (256,) and np.isfinite(emb).all()
    assert not (out / "kal" / "silent.spk.npy").exists()
    assert read_backend_tag(out) == "resemblyzer"

    r = run("prepare/preprocess_speaker_ave.py", out, singer)
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(np.load(singer / "kal.spk.npy"), emb)
    assert read_backend_tag(singer) == "resemblyzer"

    # one file from its own folder: the script folder's modules must not shadow the packages
    one = tmp_path / "one" / "x.spk.npy"
    r = run("speaker/inference.py", "-w", waves16 / "kal" / "scale.wav", "-s", one, "--backend", "resemblyzer")
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(np.load(one), emb, atol=1e-6)
    assert read_backend_tag(one) == "resemblyzer"


def test_preprocess_speaker_resume_and_refusals(waves16, tmp_path, recipe_ckpt, capsys):
    out = tmp_path / "speaker"
    args = [str(waves16), str(out), "--backend", "resemblyzer", "--device", "cpu"]
    assert preprocess_speaker.main(args) == 1
    first = np.load(out / "kal" / "scale.spk.npy")
    assert preprocess_speaker.main(args) == 1  # resumable: the good file is skipped, the bad ones fail again
    err = capsys.readouterr().err
    assert "0 processed, 1 already done, 2 failed" in err
    np.testing.assert_array_equal(np.load(out / "kal" / "scale.spk.npy"), first)
    # another backend into a folder tagged resemblyzer: refused before any work
    assert preprocess_speaker.main([str(waves16), str(out), "--backend", "lstm", "--checkpoint", str(recipe_ckpt)]) == 2
    assert "'resemblyzer', but 'lstm'" in capsys.readouterr().err
    # missing LSTM checkpoint: one line, the offline alternative named, nothing written
    fresh = tmp_path / "fresh"
    assert preprocess_speaker.main([str(waves16), str(fresh), "--backend", "lstm",
                                    "--checkpoint", str(tmp_path / "none.pth.tar")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pretrained file not found" in err and "--backend resemblyzer" in err
    assert not fresh.exists()

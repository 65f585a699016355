"""Golden parity of the one mel function (spec/inference.py of the original)."""

from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from common.config import load_config
from common.mel import mel_basis, mel_from_config, mel_from_file, mel_spectrogram
from golden import assert_close, atol, call_arg, call_args, golden_cases, load_golden


@pytest.mark.parametrize("path", golden_cases("spec_mel"))
def test_golden_spec_mel(path, tmp_path):
    g, meta = load_golden(path)
    # the settings the original was called with, as its meta_json records them
    call = call_args(meta)
    assert call.get("center") is False, "ours is the original's center=False mel only"
    d = SimpleNamespace(sampling_rate=call["sampling_rate"], filter_length=call["n_fft"],
                        mel_channels=call["num_mels"], hop_length=call["hop_size"], win_length=call["win_size"],
                        mel_fmin=call["fmin"], mel_fmax=call["fmax"])
    basis_args = call_args(meta, "extras")  # librosa.filters.mel(sr=, n_fft=, n_mels=, fmin=, fmax=)
    basis = mel_basis(basis_args["sr"], basis_args["n_fft"], basis_args["n_mels"], basis_args["fmin"],
                      basis_args["fmax"])
    assert_close(basis.numpy(), g["out_mel_basis"], 1e-7, "mel basis")
    mel = mel_from_config(torch.from_numpy(g["in_wav"]), d)
    assert_close(mel[0].numpy(), g["out_mel"], atol(path, "mel", 1e-3), "mel")
    # the file path: float WAV written as the original harness did (at the rate its loader asks for, so no
    # resampling), then peak 0.6 and trim
    wav_path = tmp_path / "raw.wav"
    sf.write(wav_path, g["in_wav_raw_file_content"], call_arg(meta, "sr", "call_file"), subtype="FLOAT")
    assert_close(mel_from_file(wav_path, d).numpy(), g["out_mel_file"], atol(path, "mel_file", 5e-4), "mel_file")


def test_default_config_mel_is_the_originals():
    """The shipped config computes the original's mel (spec/inference.py as its training and inference call it)."""
    d = load_config().data
    assert (d.sampling_rate, d.filter_length, d.mel_channels, d.hop_length, d.win_length) == (32000, 1024, 100, 320,
                                                                                               1024)
    assert (d.mel_fmin, d.mel_fmax) == (40.0, 16000.0)
    wav = torch.randn(1, 320 * 20) * 0.1
    assert torch.equal(mel_from_config(wav, d), mel_spectrogram(wav))


def test_mel_frame_count_and_float64():
    wav = torch.randn(2, 320 * 50 + 17, dtype=torch.float64) * 0.1
    mel = mel_spectrogram(wav)
    assert mel.shape == (2, 100, 50) and mel.dtype == torch.float64
    mel32 = mel_spectrogram(wav.float())
    assert np.abs(mel.numpy() - mel32.numpy()).max() < 1e-3


@pytest.mark.parametrize("sr, n_fft, n_mels, fmin, fmax",
                         [(32000, 1024, 100, 40.0, 16000.0), (22050, 1024, 80, 0.0, 8000.0)])
def test_mel_filters_are_librosas(sr, n_fft, n_mels, fmin, fmax):
    """The filterbank (built by torchaudio, faster to import) is librosa.filters.mel's default within 1e-7."""
    import librosa

    ours = mel_basis(sr, n_fft, n_mels, fmin, fmax).numpy()
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-7)

"""The one mel spectrogram: training targets (``*.mel.pt``), the vocoder input and every mel comparison.

Matches the original ``spec/inference.py`` (``golden/spec_mel.npz``): reflect-pad (n_fft - hop) / 2 each side,
STFT with a periodic Hann window and ``center=False``, magnitude ``sqrt(re^2 + im^2 + 1e-9)``, librosa's slaney
mel filterbank, natural log of ``max(x, 1e-5)``. ``T = N // hop`` frames for ``N`` samples.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from common.audio import MIN_FEATURE_SECONDS, load_audio, normalize_peak


@functools.lru_cache(maxsize=8)
def _mel_basis(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    # librosa.filters.mel's default (Slaney scale and area norm), built by torchaudio: the same filters within 1e-7
    # (tests/test_golden_mel.py), and `import librosa` alone took 2-4 s of every mel step
    import torchaudio.functional as AF

    fb = AF.melscale_fbanks(n_fft // 2 + 1, fmin, fmax, n_mels, sr, norm="slaney", mel_scale="slaney")
    return fb.T.contiguous().numpy().astype(np.float32)


def mel_basis(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float, device=None, dtype=torch.float32):
    """The librosa filterbank ``[n_mels, n_fft // 2 + 1]`` as a tensor (cached per setting)."""
    return torch.from_numpy(_mel_basis(sr, n_fft, n_mels, float(fmin), float(fmax))).to(device=device, dtype=dtype)


def mel_spectrogram(
    wav: torch.Tensor,
    n_fft: int = 1024,
    n_mels: int = 100,
    sr: int = 32000,
    hop: int = 320,
    win: int = 1024,
    fmin: float = 40.0,
    fmax: float = 16000.0,
) -> torch.Tensor:
    """Log-mel of ``wav`` ``(B, N)`` (or ``(N,)``) at ``sr`` -> ``(B, n_mels, N // hop)`` (``(n_mels, T)`` for 1-D).

    Works in float32 or float64 on any device (the original was float32 only).
    """
    squeeze = wav.dim() == 1
    if squeeze:
        wav = wav.unsqueeze(0)
    wav = wav[:, : wav.shape[-1] // hop * hop]  # drop the partial last hop so T = N / hop exactly
    pad = (n_fft - hop) // 2
    x = torch.nn.functional.pad(wav.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
    window = torch.hann_window(win, device=wav.device, dtype=wav.dtype)
    spec = torch.stft(x, n_fft, hop_length=hop, win_length=win, window=window, center=False, return_complex=True)
    mag = torch.sqrt(spec.real.pow(2) + spec.imag.pow(2) + 1e-9)
    mel = torch.matmul(mel_basis(sr, n_fft, n_mels, fmin, fmax, wav.device, wav.dtype), mag)
    mel = torch.log(torch.clamp(mel, min=1e-5))
    return mel[0] if squeeze else mel


def mel_from_config(wav: torch.Tensor, data_cfg) -> torch.Tensor:
    """``mel_spectrogram`` with the settings of ``cfg.data``."""
    return mel_spectrogram(
        wav,
        n_fft=data_cfg.filter_length,
        n_mels=data_cfg.mel_channels,
        sr=data_cfg.sampling_rate,
        hop=data_cfg.hop_length,
        win=data_cfg.win_length,
        fmin=data_cfg.mel_fmin,
        fmax=data_cfg.mel_fmax,
    )


def mel_from_file(path: str | Path, data_cfg) -> torch.Tensor:
    """``(n_mels, T)`` float32 log-mel of an audio file, as ``prepare/preprocess_spec.py`` stores it.

    Like the original: read at the mel rate, rescale to peak 0.6, drop the partial last hop.
    """
    wav = normalize_peak(load_audio(path, data_cfg.sampling_rate, min_seconds=MIN_FEATURE_SECONDS), 0.6)
    return mel_from_config(torch.from_numpy(wav), data_cfg)

"""Griffin-Lim fallback vocoder: PREVIEW QUALITY ONLY, for runs without the NSF-BigVGAN checkpoint.

The log-mel is turned back into a linear magnitude with the pseudo-inverse of the mel filterbank (clipped at zero),
then phases are estimated with torchaudio's fast Griffin-Lim (momentum 0.99; Perraudin et al., 2013). It ignores
F0, so the result is buzzy and phasey, but it is deterministic, needs no weights and has the right length and
timing (320 samples per 10 ms frame at 32 kHz), which is what tests, smoke runs and training previews need.
"""

from __future__ import annotations

import functools
import logging

import numpy as np
import torch
import torchaudio

from bigvgan.chunks import synthesize_chunked
from common.mel import mel_basis
from common.windows import Window

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=4)
def _inverse_basis(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> torch.Tensor:
    """``pinv(mel_basis)`` ``(n_fft // 2 + 1, n_mels)``, computed in float64."""
    basis = mel_basis(sr, n_fft, n_mels, fmin, fmax, dtype=torch.float64)
    return torch.linalg.pinv(basis).float()


def mel_to_magnitude(mel: torch.Tensor, data_cfg) -> torch.Tensor:
    """Natural-log mel ``(n_mels, T)`` -> non-negative linear STFT magnitude ``(n_fft // 2 + 1, T)``."""
    d = data_cfg
    inv = _inverse_basis(d.sampling_rate, d.filter_length, d.mel_channels, float(d.mel_fmin), float(d.mel_fmax))
    return torch.clamp(inv @ torch.exp(mel.float()), min=0.0)


def griffinlim_vocode(
    mel: torch.Tensor | np.ndarray,
    data_cfg,
    n_iter: int = 32,
    chunk: int = 2400,
    overlap: int = 32,
) -> np.ndarray:
    """Log-mel ``(n_mels, T)`` (as ``common.mel`` computes it) -> float32 audio ``(hop * T,)`` at ``sampling_rate``.

    Runs in windows of ``chunk`` frames with ``overlap`` context frames, crossfaded, so memory stays bounded for
    long songs. Deterministic (zero initial phase). Preview quality only; see the module docstring.
    """
    mel = torch.as_tensor(np.asarray(mel) if not isinstance(mel, torch.Tensor) else mel).float().cpu()
    d = data_cfg
    if mel.dim() != 2 or mel.shape[0] != d.mel_channels:
        raise ValueError(f"griffinlim_vocode expects a log-mel ({d.mel_channels}, T), got {tuple(mel.shape)}")
    hop, n_fft = int(d.hop_length), int(d.filter_length)
    window = torch.hann_window(int(d.win_length))
    # Frame k of common.mel is centred on sample hop * k + (n_fft - hop) / 2 - (n_fft / 2 - hop) = hop * k + hop / 2
    # (reflect padding of (n_fft - hop) / 2, center=False); istft with center=True puts it at hop * k.
    delay = (n_fft - hop) // 2 - (n_fft // 2 - hop)

    def render(w: Window) -> np.ndarray:
        n = (w.win_end - w.win_start) * hop
        mag = mel_to_magnitude(mel[:, w.win_start: w.win_end], d)
        mag = torch.cat([mag, mag[:, -1:]], dim=1)  # a centred STFT of n = hop * T samples has T + 1 frames
        wav = torchaudio.functional.griffinlim(
            mag[None], window, n_fft, hop, int(d.win_length), power=1.0, n_iter=n_iter, momentum=0.99,
            length=n, rand_init=False,
        )[0]
        wav = torch.cat([torch.zeros(delay), wav])[:n]
        return wav.numpy()

    if mel.shape[1] == 0:
        return np.zeros(0, dtype=np.float32)
    return synthesize_chunked(mel.shape[1], hop, chunk, overlap, lambda ws: [render(w) for w in ws])

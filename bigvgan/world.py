"""WORLD vocoder from a log-mel and an F0 track: an offline vocoder that follows the given F0 exactly.

For runs without the NSF-BigVGAN checkpoint. Griffin-Lim estimates phases from the magnitude alone, so a blurry mel
(an undertrained model's) loses its harmonics and the pitch with them; WORLD (Morise et al., 2016, via pyworld)
instead excites a spectral envelope with pulses at the F0 it is given, so the melody is right whatever the mel.

Per 10 ms frame:

* spectral envelope: the natural-log mel (``common.mel``) -> linear STFT magnitude through the pseudo-inverse of the
  mel filterbank (as the Griffin-Lim preview) -> power, smoothed over one F0 (the harmonics' spacing, as WORLD's
  CheapTrick does, so the envelope no longer depends on where the harmonics of the mel lie) -> scaled to WORLD's
  power-spectral-density convention (``ENVELOPE_GAIN``, calibrated so that a harmonic signal keeps its level);
* aperiodicity from the voicing: voiced frames (F0 > 0) get a fixed modal-voice curve (periodic below 2 kHz,
  increasingly noisy above), unvoiced frames are noise (WORLD's own rule for F0 = 0);
* F0: the given track, exactly (Hz, 0 = unvoiced).

Timing: mel frame k is centred on sample ``hop * k + hop / 2`` (see ``bigvgan.griffinlim``), WORLD frame k on
``hop * k``; the output is delayed by ``hop / 2`` to match, and has exactly ``hop * T`` samples. Deterministic.
Quality: a clean, somewhat synthetic voice; timbre detail is only what the mel holds.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from bigvgan.chunks import synthesize_chunked
from bigvgan.griffinlim import mel_to_magnitude
from common.windows import Window

log = logging.getLogger(__name__)

# our smoothed STFT power (Hann 1024, 32 kHz) -> WORLD's envelope scale; calibrated so that the mel of a harmonic
# signal comes back at its own RMS (measured 2.58e-3 .. 2.78e-3 for F0 100-500 Hz, i.e. within 0.4 dB; the level
# test is in tests/test_world.py)
ENVELOPE_GAIN = 2.7e-3
ENVELOPE_FLOOR = 1e-16  # WORLD takes the log of the envelope (minimum phase): no zeros
UNVOICED_SMOOTH_HZ = 200.0  # smoothing width of unvoiced frames' envelopes
# aperiodicity of voiced frames (power ratio of noise, in dB) at these frequencies, interpolated between them
APERIODICITY_HZ = (0.0, 2000.0, 4000.0, 8000.0, 16000.0)
APERIODICITY_DB = (-40.0, -35.0, -20.0, -8.0, -3.0)


def smooth_over_f0(power: np.ndarray, f0: np.ndarray, bin_hz: float) -> np.ndarray:
    """Mean of ``power`` ``[T, F]`` over a band of one F0 (``f0`` ``[T]`` Hz; unvoiced frames:
    ``UNVOICED_SMOOTH_HZ``) centred on each bin, from the running sum with linear interpolation (edges mirrored)."""
    t, f = power.shape
    width = np.where(f0 > 0, f0, UNVOICED_SMOOTH_HZ) / bin_hz  # bins
    pad = int(np.ceil(width.max() / 2)) + 1
    ext = np.concatenate([power[:, pad:0:-1], power, power[:, -2:-pad - 2:-1]], axis=1)
    cum = np.concatenate([np.zeros((t, 1)), np.cumsum(ext, axis=1)], axis=1)  # cum[:, i] = sum(ext[:, :i])
    centre = np.arange(f, dtype=np.float64)[None, :] + pad + 0.5
    lo, hi = centre - width[:, None] / 2, centre + width[:, None] / 2

    def at(x: np.ndarray) -> np.ndarray:  # the running sum at a fractional position
        i = np.clip(np.floor(x).astype(np.int64), 0, cum.shape[1] - 2)
        frac = x - i
        rows = np.arange(t)[:, None]
        return cum[rows, i] * (1 - frac) + cum[rows, i + 1] * frac

    return np.maximum((at(hi) - at(lo)) / width[:, None], 0.0)


def mel_to_envelope(mel: torch.Tensor | np.ndarray, f0: np.ndarray, data_cfg) -> np.ndarray:
    """Log-mel ``[n_mels, T]`` + F0 ``[T]`` Hz -> WORLD spectral envelope ``[T, n_fft // 2 + 1]`` (float64, power)."""
    mel = torch.as_tensor(np.asarray(mel) if not isinstance(mel, torch.Tensor) else mel).float().cpu()
    mag = mel_to_magnitude(mel, data_cfg).double().numpy().T  # [T, F]
    bin_hz = data_cfg.sampling_rate / data_cfg.filter_length
    power = smooth_over_f0(mag**2, np.asarray(f0, dtype=np.float64), bin_hz)
    return np.maximum(power * ENVELOPE_GAIN, ENVELOPE_FLOOR)


def voiced_aperiodicity(f0: np.ndarray, n_bins: int, sr: int) -> np.ndarray:
    """WORLD aperiodicity ``[T, n_bins]`` (power ratio in [0, 1]) from the voicing alone: the modal-voice curve
    ``APERIODICITY_DB`` for voiced frames, 1 (noise) for unvoiced ones."""
    freqs = np.linspace(0.0, sr / 2, n_bins)
    curve = 10.0 ** (np.interp(freqs, APERIODICITY_HZ, APERIODICITY_DB) / 10.0)
    ap = np.ones((len(f0), n_bins))
    ap[np.asarray(f0) > 0] = curve
    return ap


def world_vocode(mel: torch.Tensor | np.ndarray, f0: np.ndarray | torch.Tensor, data_cfg, chunk: int = 2400,
                 overlap: int = 32) -> np.ndarray:
    """Log-mel ``[n_mels, T]`` (as ``common.mel`` computes it) + F0 ``[T]`` Hz at 100 frames/s -> float32 audio
    ``[hop * T]`` at ``sampling_rate``, in crossfaded windows of ``chunk`` frames (bounded memory)."""
    import pyworld

    d = data_cfg
    mel = torch.as_tensor(np.asarray(mel) if not isinstance(mel, torch.Tensor) else mel).float().cpu()
    f0 = np.asarray(f0.cpu().numpy() if isinstance(f0, torch.Tensor) else f0, dtype=np.float64)
    if mel.dim() != 2 or mel.shape[0] != d.mel_channels:
        raise ValueError(f"world_vocode expects a log-mel ({d.mel_channels}, T), got {tuple(mel.shape)}")
    if f0.shape != (mel.shape[1],):
        raise ValueError(f"world_vocode: {f0.shape} F0 frames for a mel of {mel.shape[1]} frames")
    hop, sr = int(d.hop_length), int(d.sampling_rate)
    period_ms = 1000.0 * hop / sr

    def render(w: Window) -> np.ndarray:
        n = (w.win_end - w.win_start) * hop
        f0_w = np.ascontiguousarray(f0[w.win_start: w.win_end])
        sp = mel_to_envelope(mel[:, w.win_start: w.win_end], f0_w, d)
        ap = voiced_aperiodicity(f0_w, sp.shape[1], sr)
        wav = pyworld.synthesize(f0_w, np.ascontiguousarray(sp), ap, sr, period_ms)
        wav = np.concatenate([np.zeros(hop // 2), wav])[:n]  # WORLD frame k sits at hop * k, ours at hop * k + hop/2
        return np.pad(wav, (0, n - len(wav))).astype(np.float32)

    if mel.shape[1] == 0:
        return np.zeros(0, dtype=np.float32)
    return synthesize_chunked(mel.shape[1], hop, chunk, overlap, lambda ws: [render(w) for w in ws])

"""Is a generated mel, or a converted wav, at a level real audio can have? (so a bad model warns, never just blasts)

Log-mels (``common.mel``) of real audio are bounded on both sides: below by the floor ``log(1e-5)`` = -11.5, above
by what full-scale audio gives. The loudest audio within [-1, 1] is noise: full-scale white noise has a mean over
the mel bands of about -1.2 per frame (the demo corpus, normalised to peak 0.6 like all training audio: -3.8 at its
loudest frame, -6 typically), and no full-scale signal puts a band above about 2.1 (a square wave). An untrained or
mismatched acoustic model gives mels around N(0, 1) instead, as loud as full-scale noise in every band: vocoded,
that is a clipped blast. The references are computed from the config's own mel settings.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from common.mel import mel_spectrogram

MEL_FLOOR = math.log(1e-5)  # common.mel clamps the mel at 1e-5 before the log
FLOOR_MARGIN = 1.0  # values this far below the floor cannot come from audio
CEIL_MARGIN = 0.5  # above the loudest full-scale signal's band by this much
NOISE_MARGIN = 0.3  # frames within this of full-scale white noise (band mean) count as too loud
OUT_OF_RANGE = 0.01  # fraction of values (or frames) out of range that makes a warning
CLIP_FRACTION = 0.001  # fraction of output samples at full scale that makes a warning
LIKELY_CAUSE = ("an untrained or undertrained acoustic model, a checkpoint that does not match its config (a wrong "
                "--config), or features the model was not trained on")


@functools.lru_cache(maxsize=4)
def _full_scale(sr: int, n_fft: int, n_mels: int, hop: int, win: int, fmin: float, fmax: float) -> tuple[float, float]:
    """(highest band value of full-scale signals, mean band value of full-scale white noise) for these settings."""
    n = sr  # one second
    t = np.arange(n) / sr
    signals = [np.random.default_rng(0).uniform(-1.0, 1.0, n), np.sign(np.sin(2 * np.pi * 100.0 * t)),
               np.sign(np.sin(2 * np.pi * 1000.0 * t)), np.sin(2 * np.pi * 1000.0 * t)]
    mels = [mel_spectrogram(torch.from_numpy(x.astype(np.float32)), n_fft, n_mels, sr, hop, win, fmin, fmax)
            for x in signals]
    return max(float(m.max()) for m in mels), float(mels[0].mean())


def full_scale_reference(data_cfg) -> tuple[float, float]:
    """``(ceiling, noise_mean)``: the highest band value any full-scale signal gives, and the per-frame mean over
    bands of full-scale white noise, for the mel settings of ``cfg.data``."""
    d = data_cfg
    return _full_scale(int(d.sampling_rate), int(d.filter_length), int(d.mel_channels), int(d.hop_length),
                       int(d.win_length), float(d.mel_fmin), float(d.mel_fmax))


def mel_range_warning(mel: torch.Tensor | np.ndarray, data_cfg) -> str | None:
    """A one-paragraph warning (with the numbers) when a log-mel ``[n_mels, T]`` lies outside what real audio gives:
    over ``OUT_OF_RANGE`` of its values above the full-scale ceiling or below the floor, or of its frames as loud as
    full-scale white noise. None when it looks like a real mel."""
    m = torch.as_tensor(np.asarray(mel) if not isinstance(mel, torch.Tensor) else mel).float()
    if m.numel() == 0:
        return None
    ceiling, noise_mean = full_scale_reference(data_cfg)
    frame_mean = m.mean(dim=0)
    high = float((m > ceiling + CEIL_MARGIN).float().mean())
    low = float((m < MEL_FLOOR - FLOOR_MARGIN).float().mean())
    loud = float((frame_mean > noise_mean - NOISE_MARGIN).float().mean())
    if max(high, low, loud) <= OUT_OF_RANGE:
        return None
    return (f"the acoustic model's mel is outside the range of real log-mels: its values span "
            f"{float(m.min()):.2f}..{float(m.max()):.2f} (mean {float(m.mean()):.2f}), real ones "
            f"{MEL_FLOOR:.1f}..{ceiling:.1f} at full scale (training audio, at peak 0.6, about -6 on average); "
            f"{100 * high:.1f} % of values above {ceiling + CEIL_MARGIN:.1f}, {100 * low:.1f} % below "
            f"{MEL_FLOOR - FLOOR_MARGIN:.1f}, {100 * loud:.1f} % of frames as loud as full-scale white noise (band "
            f"mean > {noise_mean - NOISE_MARGIN:.1f}). Likely cause: {LIKELY_CAUSE}. Expect loud noise, not singing")


def clipping_warning(wav: np.ndarray | torch.Tensor) -> str | None:
    """A warning (with the numbers) when over ``CLIP_FRACTION`` of the float samples of ``wav`` are at or beyond
    full scale (|x| >= 1, clipped when written as 16-bit); None otherwise."""
    x = np.abs(np.asarray(wav.detach().cpu() if isinstance(wav, torch.Tensor) else wav, dtype=np.float32))
    if x.size == 0:
        return None
    clipped = float(np.mean(x >= 1.0))
    if clipped <= CLIP_FRACTION:
        return None
    return (f"the output clips: {100 * clipped:.2f} % of its samples are at full scale (peak {float(x.max()):.2f}, "
            f"RMS {float(np.sqrt(np.mean(x.astype(np.float64) ** 2))):.2f}; real singing is far below: "
            f"training audio has peak 0.6). Likely cause: {LIKELY_CAUSE}")


def conversion_warnings(mel: torch.Tensor | np.ndarray, wav: np.ndarray | torch.Tensor, data_cfg) -> list[str]:
    """Both checks of one conversion: the acoustic model's mel ``[n_mels, T]`` and the vocoded ``wav``."""
    return [w for w in (mel_range_warning(mel, data_cfg), clipping_warning(wav)) if w]

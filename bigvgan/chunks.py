"""Bounded-memory synthesis of long inputs: frame windows with context, joined by linear crossfades.

A sequence of ``T`` frames is cut into cores of ``chunk`` frames (``common.windows.plan_windows``, the planner the
acoustic model uses too); each core is synthesised inside a window that adds ``overlap`` context frames on each side.
Neighbouring outputs are crossfaded over ``overlap`` frames centred on the seam, so each window keeps ``overlap / 2``
frames of clean context beyond its crossfade zone: a model whose receptive field is shorter than that gives exactly
the unchunked output.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from common.windows import Window, group_equal, plan_windows

log = logging.getLogger(__name__)


def synthesize_chunked(
    n_frames: int,
    hop: int,
    chunk: int,
    overlap: int,
    render: Callable[[list[Window]], list[np.ndarray]],
    batch: int = 1,
) -> np.ndarray:
    """Assemble the outputs of ``render(windows)`` (``(win_end - win_start) * hop`` samples per window) into
    ``n_frames * hop``; equal-length windows go to it ``batch`` at a time, in order.

    Seams are crossfaded linearly over ``overlap * hop`` samples centred on the core boundary. Returns float32.
    """
    out = np.zeros(n_frames * hop, dtype=np.float32)
    windows = plan_windows(n_frames, chunk, overlap)
    half = overlap * hop // 2
    fade = 2 * half  # samples in one crossfade
    ramp = (np.arange(fade, dtype=np.float64) + 0.5) / max(fade, 1)  # 0 -> 1, symmetric: ramp + ramp[::-1] == 1
    rendered = (pair for group in group_equal(windows, max(1, batch)) for pair in zip(group, render(group)))
    for i, (w, audio) in enumerate(rendered):  # in window order
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        expected = (w.win_end - w.win_start) * hop
        if audio.shape[0] != expected:
            raise RuntimeError(f"chunk renderer returned {audio.shape[0]} samples for a {expected}-sample window")
        first, last = i == 0, i == len(windows) - 1
        lo = w.start * hop - (0 if first else half)  # this chunk's share of the output, in samples
        hi = w.end * hop + (0 if last else half)
        piece = audio[lo - w.win_start * hop: hi - w.win_start * hop].astype(np.float64)
        if not first and fade:
            piece[:fade] *= ramp
        if not last and fade:
            piece[-fade:] *= ramp[::-1]
        out[lo:hi] += piece.astype(np.float32)
    return out

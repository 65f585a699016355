"""The acoustic model's windows and their crossfade: a song of ``n`` frames (100 Hz) runs in windows of
``infer.out_chunk`` frames plus ``infer.hop_frame`` context frames each side (``common.windows.plan_windows``, the
planner the vocoders use too), and neighbouring mels are blended over the whole ``2 * hop_frame`` frames they share.
"""

from __future__ import annotations

import numpy as np

from common.windows import plan_windows


def windows(n: int, chunk: int, context: int) -> list[tuple[int, int]]:
    """Input windows ``[start, end)`` covering ``n`` frames: cores of ``chunk`` frames plus ``context`` each side.

    A last window the previous one already covers is not run. Unlike the original loop, the last frame is never
    dropped (README "Differences from the original").
    """
    return [(w.win_start, w.win_end) for w in plan_windows(n, chunk, context, min_tail=context + 1)]


def crossfade_weights(start: int, end: int, n: int, context: int) -> np.ndarray:
    """Trapezoid weights of one window: linear ramps over the ``2 * context`` frames it shares with a neighbour.

    Neighbouring windows overlap by exactly ``2 * context`` frames and their ramps sum to 1 there.
    """
    w = np.ones(end - start, dtype=np.float32)
    ramp = 2 * context
    if ramp > 0 and start > 0:
        w[:ramp] = (np.arange(ramp, dtype=np.float32) + 0.5) / ramp
    if ramp > 0 and end < n:
        w[-ramp:] = np.minimum(w[-ramp:], (ramp - 0.5 - np.arange(ramp, dtype=np.float32)) / ramp)
    return w

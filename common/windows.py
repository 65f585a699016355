"""The one window planner of long inputs: the acoustic model and every vocoder run in frame windows with context.

A sequence of ``T`` frames (100 Hz) is cut into cores of ``chunk`` frames; each core is processed inside a window
that adds ``overlap`` context frames on each side, so memory stays bounded whatever the song's length. How the
windows' outputs are joined is the caller's: the vocoders crossfade samples centred on each seam
(``bigvgan.chunks.synthesize_chunked``), the acoustic model weights whole overlaps (``conversion.crossfade``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Window:
    """Core frames ``[start, end)`` processed inside the context window ``[win_start, win_end)``."""

    start: int
    end: int
    win_start: int
    win_end: int


def plan_windows(n_frames: int, chunk: int, overlap: int, min_tail: int | None = None) -> list[Window]:
    """Cores of ``chunk`` frames with ``overlap`` context frames each side, clipped to ``[0, n_frames)``.

    The last core holds the remainder; if that is shorter than ``min_tail`` frames (default ``overlap``) it joins
    the previous core (which then has up to ``chunk + min_tail - 1`` frames). The default keeps every vocoder
    crossfade inside both neighbouring windows; ``min_tail = overlap + 1`` also drops a last window that the
    previous one already covers entirely (the acoustic model's windows). No frame is ever left out.
    """
    if chunk <= 0 or overlap < 0:
        raise ValueError(f"chunk must be > 0 and overlap >= 0, got chunk={chunk}, overlap={overlap}")
    if chunk < overlap:
        raise ValueError(f"chunk ({chunk}) must be at least the overlap ({overlap}) so crossfades do not collide")
    min_tail = overlap if min_tail is None else min_tail
    starts = list(range(0, n_frames, chunk))
    if len(starts) > 1 and n_frames - starts[-1] < min_tail:
        starts.pop()  # a last core too short to stand alone is absorbed by the previous window
    ends = starts[1:] + [n_frames]
    return [Window(s, e, max(0, s - overlap), min(n_frames, e + overlap)) for s, e in zip(starts, ends)]


def group_equal(windows: list[T], size: int, length: Callable[[T], int] = lambda w: w.win_end - w.win_start,
                ) -> list[list[T]]:
    """Consecutive windows of equal ``length`` in groups of at most ``size`` (to run as one batch: each window then
    gets exactly the padding, and so the output, it gets alone)."""
    groups: list[list[T]] = []
    for w in windows:
        last = groups[-1] if groups else None
        if last and len(last) < size and length(last[0]) == length(w):
            last.append(w)
        else:
            groups.append([w])
    return groups

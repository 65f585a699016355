"""The editable pitch CSV of ``pitch/inference.py``: one row per 10 ms F0 frame, ``<time label>,<Hz>``, no header.

Layout as the original's ``save_csv_pitch``: row i is ``f"{minute}m {seconds}s {millisecond:3d},{value}"`` with the
label for ``t = i * 10`` ms (a label only: padded frame i actually describes ``(i - 1) * 10`` ms, see pitch.f0).
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import numpy as np

from common.io import atomic_path
from pitch.f0 import round_f0

log = logging.getLogger(__name__)


class PitchCsvError(ValueError):
    """A pitch CSV that cannot be read; the message is one line naming the file (and line)."""


def time_label(index: int) -> str:
    """The original's time column for row ``index`` (10 ms per row): e.g. 6123 -> ``'1m 1s 230'``."""
    t = index * 10
    minute = t // 60000
    seconds = (t - minute * 60000) // 1000
    millisecond = t % 1000
    return f"{minute}m {seconds}s {millisecond:3d}"


def save_csv_pitch(path: str | Path, f0: np.ndarray) -> None:
    """Write F0 ``[T]`` (Hz, 0 = unvoiced) as the original's CSV layout, atomically.

    Deliberate difference from the original: values keep 0.1 Hz precision (``225.6``; the same rounding as the
    training ``.pit.npy`` files) instead of being truncated to whole Hz (``int(f0)`` -> ``225``), so inference sees
    the pitch training saw. The original's reader (``int(...)``) cannot read these files; ``load_csv_pitch`` reads both.
    """
    values = round_f0(np.asarray(f0, dtype=np.float64).reshape(-1))
    if not np.isfinite(values).all() or (values < 0).any():
        raise ValueError(f"{path}: refusing to write F0 with NaN, infinite or negative values")
    lines = [f"{time_label(i)},{v:.1f}\n" for i, v in enumerate(values)]
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(lines)


def _value_field(line: str) -> str:
    # spreadsheets re-save with ';' (and a decimal comma) or tabs in some locales; the original splits on ','.
    # Fields are read as CSV, so a quoted value keeps its decimal comma ("0m 0s   0","225,6").
    sep = next((s for s in (";", "\t") if s in line), ",")
    fields = next(csv.reader([line], delimiter=sep, skipinitialspace=True), [""])
    return (fields[-1] if fields else "").strip().replace(",", ".")


def load_csv_pitch(path: str | Path) -> np.ndarray:
    """Read a pitch CSV -> float64 ``[T]`` Hz (0 = unvoiced), one value per non-blank row.

    Reads our 0.1 Hz files and the original's whole-Hz files alike, and what a user's editor makes of them: blank
    lines, extra spaces, ``\\r\\n`` line ends, a UTF-8 byte-order mark, quoted fields, ``;`` or tab separators with a
    decimal comma. Only the last field (the value) is used; the time label is not checked, as in the original.
    Raises ``PitchCsvError`` naming the file and line for a value that is not a finite number >= 0.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise PitchCsvError(f"{path}: pitch file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PitchCsvError(f"{path}: cannot read pitch file ({exc.__class__.__name__}: {exc})") from None
    values = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        field = _value_field(line)
        try:
            value = float(field)
        except ValueError:
            raise PitchCsvError(f"{path}:{lineno}: bad pitch row {raw.strip()!r} (the last field must be Hz)") from None
        if not math.isfinite(value) or value < 0:
            raise PitchCsvError(f"{path}:{lineno}: bad pitch value {field!r} (need a finite number >= 0; 0 = unvoiced)")
        values.append(value)
    if not values:
        raise PitchCsvError(f"{path}: no pitch rows")
    return np.asarray(values, dtype=np.float64)

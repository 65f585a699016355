"""Notes of 12-tone equal temperament with A4 = 440 Hz (MIDI numbers): the one place the key, the pitch editor and
the studio's note labels convert between Hz, note numbers and names."""

from __future__ import annotations

import numpy as np

A4_HZ = 440.0
A4_MIDI = 69
NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def hz_to_midi(hz: np.ndarray | float) -> np.ndarray:
    """Hz -> fractional MIDI note number (69 = A4); NaN where ``hz <= 0``."""
    hz = np.asarray(hz, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(hz > 0, A4_MIDI + 12.0 * np.log2(np.where(hz > 0, hz, 1.0) / A4_HZ), np.nan)


def midi_to_hz(midi: np.ndarray | float) -> np.ndarray:
    """MIDI note number (may be fractional) -> Hz."""
    return A4_HZ * 2.0 ** ((np.asarray(midi, dtype=np.float64) - A4_MIDI) / 12.0)


def note_name(hz: float, cents: bool = True) -> str:
    """The nearest note of ``hz``, with its deviation unless ``cents`` is False: 446 Hz -> ``'A4 +24c'`` (``'A4'``);
    ``'-'`` for 0 Hz."""
    if not hz or hz <= 0 or not np.isfinite(hz):
        return "-"
    midi = float(hz_to_midi(hz))
    nearest = int(round(midi))
    off = int(round((midi - nearest) * 100))
    name = f"{NOTE_NAMES[nearest % 12]}{nearest // 12 - 1}"
    return name if off == 0 or not cents else f"{name} {off:+d}c"

"""Editing an F0 track on the 10 ms grid (the studio's pitch view; also usable on a loaded pitch CSV).

All functions take F0 ``[T]`` in Hz at 100 frames/s (0 = unvoiced) and return an edited float64 copy; unvoiced
frames always stay 0, so an edit never creates or removes voicing. Spans are frame ranges ``[start, end)``; seconds
convert to frames with ``frame_of`` (frame ``i`` is labelled ``i * 10 ms`` as in the pitch CSV).
Notes are 12-tone equal temperament with A4 = 440 Hz (MIDI numbers).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from pitch.notes import NOTE_NAMES, hz_to_midi, midi_to_hz, note_name

log = logging.getLogger(__name__)

FRAMES_PER_SECOND = 100
MIN_NOTE_FRAMES = 5  # a note is at least 50 ms of one semitone; shorter runs (slides, vibrato peaks) join a neighbour


class PitchEditError(ValueError):
    """An edit that cannot be applied (bad span, bad value); one line saying which."""


def parse_note(text: str) -> float:
    """A note name (``'A4'``, ``'C#3'``, ``'Eb5'``) or a number of Hz (``'220'``) -> Hz."""
    s = str(text).strip()
    try:
        hz = float(s)
    except ValueError:
        flats = {"Db": "C#", "Eb": "D#", "Gb": "F#", "Ab": "G#", "Bb": "A#"}
        letter = s[:2] if len(s) > 2 and s[1] in "#b" else s[:1]
        octave = s[len(letter):].split()[0] if s[len(letter):].strip() else ""
        name = flats.get(letter, letter.upper() if len(letter) == 1 else letter[0].upper() + letter[1])
        if name not in NOTE_NAMES or not octave.lstrip("-").isdigit():
            raise PitchEditError(f"{text!r}: not a note (like A4, C#3, Eb5) or a frequency in Hz") from None
        return float(midi_to_hz(NOTE_NAMES.index(name) + 12 * (int(octave) + 1)))
    if not np.isfinite(hz) or hz <= 0:
        raise PitchEditError(f"{text!r}: a frequency must be a finite number of Hz > 0")
    return hz


def frame_of(seconds: float, n_frames: int) -> int:
    """Seconds -> the frame index labelled with that time, clipped to ``[0, n_frames]``."""
    if not np.isfinite(seconds):
        raise PitchEditError(f"{seconds}: a time must be a finite number of seconds")
    return int(np.clip(round(float(seconds) * FRAMES_PER_SECOND), 0, n_frames))


def _span(f0: np.ndarray, start: int | None, end: int | None) -> tuple[np.ndarray, int, int]:
    f0 = np.asarray(f0, dtype=np.float64).copy()
    if f0.ndim != 1:
        raise PitchEditError(f"F0 must be one value per frame, got shape {f0.shape}")
    s = 0 if start is None else int(start)
    e = len(f0) if end is None else int(end)
    if not 0 <= s < e <= len(f0):
        raise PitchEditError(f"span {s / FRAMES_PER_SECOND:.2f}-{e / FRAMES_PER_SECOND:.2f} s: must be a non-empty "
                             f"part of the {len(f0) / FRAMES_PER_SECOND:.2f} s track")
    return f0, s, e


def shift_span(f0: np.ndarray, semitones: float, start: int | None = None, end: int | None = None) -> np.ndarray:
    """Transpose the voiced frames of ``[start, end)`` by ``semitones``; ``[T]`` -> ``[T]``."""
    f0, s, e = _span(f0, start, end)
    f0[s:e] *= 2.0 ** (float(semitones) / 12.0)
    return f0


def octave_fix(f0: np.ndarray, start: int | None = None, end: int | None = None, octaves: int | None = None
               ) -> np.ndarray:
    """Move the voiced frames of ``[start, end)`` by whole octaves.

    ``octaves`` +1 / -1 moves the whole span up / down one octave (a note the tracker heard an octave off).
    ``None`` (auto) moves the span by the whole number of octaves that puts its median nearest the median of the
    voiced frames around it (up to 1 s each side, outside the span); with no voiced frames around, nothing moves.
    """
    f0, s, e = _span(f0, start, end)
    if octaves is None:
        inside = f0[s:e][f0[s:e] > 0]
        around = np.concatenate([f0[max(0, s - FRAMES_PER_SECOND):s], f0[e:e + FRAMES_PER_SECOND]])
        around = around[around > 0]
        if not inside.size or not around.size:
            return f0
        octaves = int(round(np.log2(np.median(around) / np.median(inside))))
    f0[s:e] *= 2.0 ** int(octaves)
    return f0


def snap_to_semitones(f0: np.ndarray, start: int | None = None, end: int | None = None, strength: float = 1.0,
                      per_note: bool = True) -> np.ndarray:
    """Pull the voiced frames of ``[start, end)`` to equal-tempered semitones.

    ``per_note`` (default): each note of ``segment_notes`` is transposed as a whole so that its median lands on the
    nearest semitone, which keeps vibrato and slides. ``per_note=False``: every frame goes to its own nearest
    semitone (hard-tune, flat notes). ``strength`` in [0, 1] moves that fraction of the way (in cents).
    """
    if not 0.0 <= strength <= 1.0:
        raise PitchEditError(f"snap strength {strength}: must be within 0..1")
    f0, s, e = _span(f0, start, end)
    part = f0[s:e]
    voiced = part > 0
    midi = hz_to_midi(part)
    if per_note:
        target = np.full(part.shape, np.nan)
        for note in segment_notes(part):
            m = float(hz_to_midi(note.hz))
            target[note.start:note.end] = midi[note.start:note.end] + (round(m) - m)
    else:
        target = np.round(midi)
    moved = voiced & np.isfinite(target)
    part[moved] = midi_to_hz(midi[moved] + strength * (target[moved] - midi[moved]))
    f0[s:e] = part
    return f0


@dataclass(frozen=True)
class Note:
    """A run of voiced frames ``[start, end)`` around one semitone; ``hz`` is its median F0."""

    start: int
    end: int
    hz: float


def segment_notes(f0: np.ndarray, min_frames: int = MIN_NOTE_FRAMES) -> list[Note]:
    """Voiced runs of F0 ``[T]`` split where the nearest semitone changes and stays for ``min_frames`` frames.

    Frame-to-frame jitter and vibrato do not split a note (the semitone is that of a 5-frame median, and a new
    semitone must hold ``min_frames`` frames); unvoiced frames always end one.
    """
    f0 = np.asarray(f0, dtype=np.float64)
    notes: list[Note] = []
    voiced = f0 > 0
    edges = np.flatnonzero(np.diff(np.concatenate([[0], voiced.astype(np.int8), [0]])))
    for run_start, run_end in zip(edges[::2], edges[1::2]):
        run = f0[run_start:run_end]
        padded = np.pad(run, 2, mode="edge")
        smooth = np.median(np.lib.stride_tricks.sliding_window_view(padded, 5), axis=1)
        semis = np.round(hz_to_midi(smooth)).astype(np.int64)
        cuts = [0]
        current = semis[0]
        i = 1
        while i < len(semis):
            if semis[i] != current and (semis[i: i + min_frames] == semis[i]).all() and len(semis) - i >= min_frames:
                if i - cuts[-1] >= min_frames:
                    cuts.append(i)
                current = semis[i]
            i += 1
        cuts.append(len(run))
        for a, b in zip(cuts[:-1], cuts[1:]):
            notes.append(Note(int(run_start + a), int(run_start + b), float(np.median(run[a:b]))))
    return notes


def set_note_hz(f0: np.ndarray, note: Note, hz: float) -> np.ndarray:
    """Transpose the voiced frames of ``note`` so that their median becomes ``hz`` (its vibrato kept)."""
    if not np.isfinite(hz) or hz <= 0:
        raise PitchEditError(f"{hz} Hz: a note's pitch must be > 0 Hz")
    part = np.asarray(f0, dtype=np.float64)[note.start:note.end]
    median = float(np.median(part[part > 0])) if (part > 0).any() else 0.0
    if median <= 0:
        raise PitchEditError(f"note at {note.start / FRAMES_PER_SECOND:.2f} s has no voiced frames")
    return shift_span(f0, 12.0 * np.log2(hz / median), note.start, note.end)


def notes_table(f0: np.ndarray) -> list[list]:
    """Rows ``[note #, start s, end s, Hz, note name]`` of ``segment_notes(f0)`` for the page's table."""
    return [[i + 1, round(n.start / FRAMES_PER_SECOND, 2), round(n.end / FRAMES_PER_SECOND, 2), round(n.hz, 1),
             note_name(n.hz)] for i, n in enumerate(segment_notes(f0))]


def apply_notes_table(f0: np.ndarray, rows: list[list]) -> tuple[np.ndarray, int]:
    """Apply a table edited on the page: for each row whose Hz or note name differs from the track's note there,
    move that note (``set_note_hz``). Returns (edited F0, notes changed). The rows must be those of
    ``notes_table(f0)`` with only the Hz or note-name cells changed; a changed note name wins over the Hz cell."""
    notes = segment_notes(f0)
    if len(rows) != len(notes):
        raise PitchEditError(f"the notes table has {len(rows)} rows for {len(notes)} notes; reload the pitch")
    out, changed = np.asarray(f0, dtype=np.float64).copy(), 0
    for row, note in zip(rows, notes):
        hz_cell, name_cell = row[3], str(row[4]).strip()
        if name_cell not in ("", "-", note_name(note.hz)):
            hz = parse_note(name_cell)
        else:
            try:
                hz = float(hz_cell)
            except (TypeError, ValueError):
                raise PitchEditError(f"note {row[0]}: {hz_cell!r} is not a number of Hz") from None
        if abs(hz - round(note.hz, 1)) > 0.05:
            out = set_note_hz(out, note, hz)
            changed += 1
    return out, changed

"""pitch/edit.py: the studio's F0 edits (snap to semitones, octave fix of a span, moving one note)."""

import numpy as np
import pytest

from pitch.edit import (
    PitchEditError,
    apply_notes_table,
    frame_of,
    hz_to_midi,
    midi_to_hz,
    note_name,
    notes_table,
    octave_fix,
    parse_note,
    segment_notes,
    set_note_hz,
    shift_span,
    snap_to_semitones,
)


def melody() -> np.ndarray:
    """0.2 s rest, A3 (220 Hz) 0.5 s with 5 Hz vibrato of +-30 cents, C4 + 20 cents 0.5 s, 0.2 s rest."""
    t = np.arange(50) / 100
    a3 = 220.0 * 2 ** (0.3 * np.sin(2 * np.pi * 5 * t) / 12)
    c4 = float(midi_to_hz(60.2)) * np.ones(50)
    return np.concatenate([np.zeros(20), a3, c4, np.zeros(20)])


def test_note_names_and_parsing_round_trip():
    assert note_name(440.0) == "A4"
    assert note_name(float(midi_to_hz(60.24))) == "C4 +24c"
    assert note_name(0.0) == "-"
    assert parse_note("A4") == pytest.approx(440.0)
    assert parse_note("Eb5") == pytest.approx(parse_note("D#5"))
    assert parse_note("c#3") == pytest.approx(float(midi_to_hz(49)))
    assert parse_note("233.5") == 233.5
    for bad in ("H4", "A", "-3", "nan"):
        with pytest.raises(PitchEditError):
            parse_note(bad)
    assert float(hz_to_midi(midi_to_hz(57.3))) == pytest.approx(57.3)


def test_segment_notes_splits_at_a_held_new_semitone_not_at_vibrato():
    notes = segment_notes(melody())
    assert [(n.start, n.end) for n in notes] == [(20, 70), (70, 120)]
    assert notes[0].hz == pytest.approx(220.0, rel=0.01)
    assert note_name(notes[1].hz) == "C4 +20c"


def test_snap_per_note_keeps_vibrato_and_unvoiced_frames():
    f0 = melody()
    out = snap_to_semitones(f0)
    assert (out[f0 == 0] == 0).all() and (out[f0 > 0] > 0).all()
    c4 = hz_to_midi(out[70:120])
    assert np.allclose(c4, 60.0)  # the flat note moved 20 cents down onto C4
    a3 = hz_to_midi(out[20:70])
    assert np.ptp(a3) == pytest.approx(np.ptp(hz_to_midi(f0[20:70])))  # vibrato depth kept
    half = snap_to_semitones(f0, strength=0.5)
    assert np.allclose(hz_to_midi(half[70:120]), 60.1)


def test_snap_per_frame_flattens_and_respects_the_span():
    f0 = melody()
    out = snap_to_semitones(f0, start=70, end=120, per_note=False)
    assert np.array_equal(out[:70], f0[:70])  # outside the span untouched
    assert np.allclose(hz_to_midi(out[70:120]), 60.0)


def test_octave_fix_of_a_span_explicit_and_auto():
    f0 = np.full(300, 200.0)
    f0[100:130] = 400.0  # the tracker jumped an octave for 0.3 s
    f0[150:160] = 0.0
    assert np.allclose(octave_fix(f0, 100, 130, -1), 200.0 * (f0 > 0))
    fixed = octave_fix(f0, 100, 130)  # auto: toward the frames around the span
    assert np.allclose(fixed[f0 > 0], 200.0) and (fixed[150:160] == 0).all()
    assert np.array_equal(octave_fix(f0, 0, 300), f0)  # nothing voiced around: nothing moves
    up = octave_fix(f0, 0, 50, +1)
    assert np.allclose(up[:50], 400.0) and np.array_equal(up[50:], f0[50:])


def test_bad_spans_are_refused_with_one_line():
    f0 = melody()
    for start, end in ((50, 50), (-1, 10), (10, 500)):
        with pytest.raises(PitchEditError, match="span"):
            shift_span(f0, 1, start, end)
    assert frame_of(0.7, len(f0)) == 70 and frame_of(99, len(f0)) == len(f0)


def test_edit_one_note_in_the_table_moves_only_that_note():
    f0 = melody()
    rows = notes_table(f0)
    assert rows[0][4].startswith("A3") and rows[1][4] == "C4 +20c"
    rows[1][4] = "D4"
    out, changed = apply_notes_table(f0, rows)
    assert changed == 1
    assert np.array_equal(out[:70], f0[:70])
    assert np.median(out[70:120]) == pytest.approx(float(midi_to_hz(62)))
    rows = notes_table(f0)
    rows[0][3] = 330.0  # the Hz cell
    out, changed = apply_notes_table(f0, rows)
    assert changed == 1 and np.median(out[20:70]) == pytest.approx(330.0, rel=1e-3)
    assert np.ptp(hz_to_midi(out[20:70])) == pytest.approx(np.ptp(hz_to_midi(f0[20:70])))
    assert apply_notes_table(f0, notes_table(f0))[1] == 0  # an untouched table changes nothing
    with pytest.raises(PitchEditError, match="rows"):
        apply_notes_table(f0, rows[:1])
    with pytest.raises(PitchEditError):
        set_note_hz(f0, segment_notes(f0)[0], 0.0)

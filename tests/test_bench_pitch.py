"""bench/bench_pitch.py on a tiny case: the score, its truth frames and the scoring, with a synthetic sine song."""

import json
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from bench_pitch import (  # noqa: E402
    FESTIVAL_OCTAVE,
    evaluate,
    hz_of,
    midi_of,
    render_corpus,
    score_events,
    score_timing,
    score_track,
    score_xml,
    summarise,
    truth_frames,
)

from pitch.f0 import SAMPLE_RATE, compute_f0, frame_times  # noqa: E402

SONG = (120, [("C4", 1.0, "la"), ("G4", 0.5, "la"), ("R", 0.5, ""), ("C5", 0.5, "lo"), ("E4", 1.0, "me")])


def sine_song(events, offset=0.1, seconds=3.5):
    """Harmonic tones exactly on the score (festival's octave convention undone), ``offset`` s of silence first."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f = np.zeros_like(t)
    for start, end, hz in events:
        f[(t >= start + offset) & (t < end + offset)] = hz
    phase = 2 * np.pi * np.cumsum(f) / SAMPLE_RATE
    x = sum((0.4 / h) * np.sin(h * phase) for h in range(1, 4)) * (f > 0)
    return x.astype(np.float32)


def test_score_xml_and_events_follow_festivals_conventions():
    xml = score_xml(*SONG, shift=2)
    assert '<PITCH NOTE="D4"><DURATION BEATS="1.0">la</DURATION></PITCH>' in xml and '<REST BEATS="0.5">' in xml
    events = score_events(*SONG, shift=2)
    assert [round(e[0], 3) for e in events] == [0.0, 0.5, 0.75, 1.0, 1.25] and events[2][2] == 0.0
    # festival sings "D4" at MIDI 50 (A5 = 440 Hz in its naming)
    assert abs(events[0][2] - hz_of(midi_of("D4") - FESTIVAL_OCTAVE)) < 1e-9 and abs(events[0][2] - 146.83) < 0.01


def test_sine_song_scores_perfect_for_praat_and_an_octave_error_counts_as_one():
    events = score_events(*SONG, shift=0)
    wav = sine_song(events)
    offset, scale = score_timing(wav, events)
    assert abs(offset - 0.1) < 0.011 and abs(scale - 1.0) < 0.006  # the truth is found from the energy alone
    ref, rest = truth_frames(events, frame_times(len(wav)), offset, scale)
    f0 = compute_f0(wav, method="praat")
    counts = score_track(f0, ref, rest)
    rates = summarise(counts)
    assert counts["note_frames"] == 126 and counts["rest_frames"] == 19
    assert rates["raw_pitch_accuracy"] == 1.0 and rates["raw_chroma_accuracy"] == 1.0
    assert rates["octave_error_rate"] == 0 and rates["gross_error_rate"] == 0
    assert rates["voicing_recall"] == 1.0 and rates["voicing_false_alarm"] == 0
    # a deliberate octave error on 10 note frames, and 5 voiced frames in the rest
    bad = f0.copy()
    frames = np.flatnonzero(ref > 0)[20:30]
    bad[frames] *= 2.0
    bad[np.flatnonzero(rest)[:5]] = 200.0
    wrong = score_track(bad, ref, rest)
    assert wrong["octave"] == 10 and wrong["gross"] == 10 and wrong["rpa"] == counts["rpa"] - 10
    assert wrong["rca"] == counts["rca"] and wrong["false_alarms"] == 5
    # a fifth off is gross but not an octave error, and not chroma-correct
    bad[frames] = f0[frames] * 1.5
    fifth = score_track(bad, ref, rest)
    assert fifth["octave"] == 0 and fifth["gross"] == 10 and fifth["rca"] == counts["rca"] - 10


def test_corpus_is_reused_from_the_cache_and_evaluated(tmp_path):
    """A cached corpus needs no festival: the sine song stands in for both voices' renditions."""
    voices = {"v1": "voice_none", "v2": "voice_none"}
    songs = {"tiny": SONG}
    for voice in voices:  # "rendered" with festival's octave convention: the written notes sound an octave low
        sf.write(tmp_path / f"{voice}_low_tiny.wav", sine_song(score_events(*SONG, shift=0)), SAMPLE_RATE)
        (tmp_path / f"{voice}_low_tiny.xml").write_text(score_xml(*SONG, shift=0))  # the score it was sung from
    items = render_corpus(tmp_path, voices=voices, ranges={"low": 0}, songs=songs)
    assert [it["wav"] for it in items] == ["v1_low_tiny.wav", "v2_low_tiny.wav"]
    assert json.loads((tmp_path / "score.json").read_text())[0]["events"][0][2] == items[0]["events"][0][2]
    report = evaluate(items, tmp_path, ["praat"])
    praat = report["methods"]["praat"]
    assert praat["raw_pitch_accuracy"] == 1.0 and praat["with_f0_fix_octave"]["raw_pitch_accuracy"] == 1.0
    assert set(praat["raw_pitch_accuracy_per_voice"]) == {"v1_low", "v2_low"} and praat["cpu_s_per_audio_s"] > 0

"""F0 extractors against a sung score: festival sings known notes, each extractor is scored on the note interiors.

    python bench/bench_pitch.py [--corpus bench/cache/pitch_corpus] [--methods praat harvest crepe crepe-tiny fcpe]
                                [--json bench/results/cpu_bench_pitch.json]

The corpus (rendered once with festival's singing mode, then reused from ``--corpus``): the diphone voices kal and ked
(the HTS voice slt ignores the written pitch, see tests/fixtures/make_corpus.py) each sing every song in a low (male)
and a high (female) range; the songs have quick notes (125 ms), leaps up to an octave and rests. The truth of a
rendition is its score: note k sounds from its cumulative beat time for its length, with one offset and one tempo scale
per file (festival sings about 0.8 times as long as written), those at which the audio's energy (not any extractor) best
matches the score's notes and rests. Festival names A5 = 440 Hz: its notes sound an octave below their names.

Scored frames (10 ms grid of ``pitch.f0``): the interior of each note (its first 40 ms, the glide into it, and its
last 20 ms left out) and the rests (their first and last 30 ms left out). Per extractor: raw pitch accuracy (within
50 cents), raw chroma accuracy (within 50 cents after folding octaves), the octave-error rate (off by 1200 +- 50
cents x k), gross errors (more than 200 cents off), voicing recall on note interiors, voicing false alarms on rests,
and the seconds per audio second (wall and process CPU time; other jobs on a shared machine inflate the wall time).
Also with ``--f0_fix octave``. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.audio import load_audio  # noqa: E402
from common.io import write_text  # noqa: E402
from pitch.f0 import METHODS, SAMPLE_RATE, compute_f0, fix_octaves, frame_times  # noqa: E402

NOTE_HEAD = 0.040  # s left out at the start of each note (the glide into it)
NOTE_TAIL = 0.020  # s left out at its end
REST_EDGE = 0.030  # s left out at both ends of a rest
RPA_CENTS = 50.0
GROSS_CENTS = 200.0
MAX_OFFSET = 0.15  # s: the score-to-audio offset searched per file
TEMPO_SCALES = np.arange(0.70, 1.1001, 0.005)  # festival's sung length / the score's (measured: about 0.8)

# voice -> festival command; ranges -> transposition in semitones of the written songs (written around C3-C4)
VOICES = {"kal": "voice_kal_diphone", "ked": "voice_ked_diphone"}
# sounding A2-E4 and D3-A4 (festival's note names are an octave high). The diphone voices stop following the score
# above ~480 Hz (measured: a written C5 sung at 496 Hz, E5 at 481 Hz), which caps the high range at A4.
RANGES = {"male": 12, "female": 17}

# songs: (bpm, [(note or "R" for a rest, beats, syllable)]); our own melodies, sung on open syllables
SONGS = {
    "leaps": (100, [("C3", 1., "la"), ("C4", 1., "lah"), ("G3", .5, "loo"), ("C3", .5, "no"), ("R", .5, ""),
                    ("E3", .5, "me"), ("E4", 1., "may"), ("A3", .5, "la"), ("A2", 1., "lo"), ("R", .5, ""),
                    ("D3", .5, "nah"), ("D4", 1., "no"), ("F3", 1., "loo")]),
    "quick": (120, [("G3", .25, "la"), ("A3", .25, "la"), ("B3", .25, "la"), ("C4", .25, "la"), ("D4", .5, "lay"),
                    ("R", .5, ""), ("C4", .25, "no"), ("B3", .25, "no"), ("A3", .25, "no"), ("G3", .25, "no"),
                    ("E3", 1., "me"), ("R", .5, ""), ("D3", .25, "la"), ("D4", .25, "la"), ("D3", .25, "la"),
                    ("D3", .5, "loo"), ("G3", 1.5, "lah")]),
}

NOTE_INDEX = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
NAMES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]


def midi_of(note: str) -> int:
    """``"C#4"`` -> 61 (sharps only, one-digit octave)."""
    return 12 * (int(note[-1]) + 1) + NOTE_INDEX[note[0]] + (1 if "#" in note else 0)


def note_name(midi: int) -> str:
    return f"{NAMES[midi % 12]}{midi // 12 - 1}"


def hz_of(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69) / 12.0)


FESTIVAL_OCTAVE = 12  # festival's singing mode names A5 = 440 Hz: its "C4" sounds as C3 (MIDI 48)


def score_xml(bpm: int, notes: list, shift: int) -> str:
    """Festival's singing XML; a rest is a ``REST`` element (Singing.v0_1.dtd)."""
    body = "".join(f'<REST BEATS="{b}"></REST>' if n == "R" else
                   f'<PITCH NOTE="{note_name(midi_of(n) + shift)}"><DURATION BEATS="{b}">{syl}</DURATION></PITCH>'
                   for n, b, syl in notes)
    return ('<?xml version="1.0"?>\n<!DOCTYPE SINGING PUBLIC "-//SINGING//DTD SINGING mark up//EN" '
            f'"Singing.v0_1.dtd" []>\n<SINGING BPM="{bpm}">{body}</SINGING>\n')


def score_events(bpm: int, notes: list, shift: int) -> list[tuple[float, float, float]]:
    """``[(start s, end s, F0 Hz or 0 for a rest)]`` at the nominal tempo, from time 0."""
    out, t = [], 0.0
    for n, beats, _ in notes:
        d = beats * 60.0 / bpm
        out.append((t, t + d, 0.0 if n == "R" else hz_of(midi_of(n) + shift - FESTIVAL_OCTAVE)))
        t += d
    return out


def render_corpus(folder: Path, voices=VOICES, ranges=RANGES, songs=SONGS) -> list[dict]:
    """Sing every song with every voice in every range into ``folder`` (reusing files already there); returns the
    items ``{"wav", "voice", "range", "song", "events"}`` and writes ``score.json`` beside them."""
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for voice, command in voices.items():
        for rng, shift in ranges.items():
            for song, (bpm, notes) in songs.items():
                wav = folder / f"{voice}_{rng}_{song}.wav"
                xml = score_xml(bpm, notes, shift)
                sung = wav.with_suffix(".xml")  # the score a cached file was sung from: another score, sing again
                if not wav.is_file() or not sung.is_file() or sung.read_text() != xml:
                    if shutil.which("text2wave") is None:
                        raise SystemExit(f"{wav}: not cached and festival is not installed (apt-get install -y "
                                         "festival festvox-kallpc16k festvox-kdlpc16k)")
                    with tempfile.TemporaryDirectory() as tmp:
                        score, out = Path(tmp) / "song.xml", Path(tmp) / "out.wav"
                        score.write_text(xml)
                        subprocess.run(["text2wave", "-mode", "singing", "-eval", f"({command})", str(score),
                                        "-o", str(out)], check=True, capture_output=True)
                        shutil.move(out, wav)
                    sung.write_text(xml)
                items.append({"wav": wav.name, "voice": voice, "range": rng, "song": song,
                              "events": score_events(bpm, notes, shift)})
    write_text(folder / "score.json", json.dumps(items, indent=1))
    return items


def truth_frames(events: list, times: np.ndarray, offset: float, scale: float = 1.0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per frame at ``times``: the score's F0 (Hz) in note interiors, else 0; and a mask of the scored rest frames.
    Score time t sounds at ``offset + scale * t``."""
    ref = np.zeros(len(times))
    rest = np.zeros(len(times), bool)
    for start, end, hz in events:
        s, e = offset + scale * start, offset + scale * end
        if hz > 0:
            ref[(times >= s + NOTE_HEAD) & (times <= e - NOTE_TAIL)] = hz
        else:
            rest |= (times >= s + REST_EDGE) & (times <= e - REST_EDGE)
    return ref, rest


def short_rms(wav: np.ndarray, window: int = 320) -> np.ndarray:
    """RMS of the ``window``-sample (20 ms) stretch centred at ``i * 10 ms``, ``[1 + N // 160]``: short, so that
    note edges are not smeared (pitch.f0.frame_rms uses 64 ms)."""
    padded = np.pad(np.asarray(wav, dtype=np.float64), (window // 2, window // 2))
    power = np.concatenate([[0.0], np.cumsum(padded ** 2)])
    starts = np.arange(1 + len(wav) // 160) * 160
    return np.sqrt(np.maximum(power[starts + window] - power[starts], 0.0) / window)


def score_timing(wav: np.ndarray, events: list) -> tuple[float, float]:
    """``(offset s, tempo scale)``: where the audio's loud frames best match the score's notes (loud) and rests and
    the silence after the song (quiet). An energy match, so that no extractor is favoured; festival sings the
    score about 0.8 times as long as written, so the scale is fitted with the offset."""
    rms = short_rms(wav)
    loud = rms > max(1e-4, 0.05 * np.percentile(rms, 95))
    times = np.arange(len(rms)) * 0.01
    starts = np.array([e[0] for e in events if e[2] > 0])
    ends = np.array([e[1] for e in events if e[2] > 0])
    best = (-1.0, 0.0, 1.0)
    for scale in TEMPO_SCALES:
        for offset in np.arange(-MAX_OFFSET, MAX_OFFSET + 1e-9, 0.01):
            s, e = offset + scale * starts, offset + scale * ends
            sound = ((times[:, None] >= s[None, :]) & (times[:, None] < e[None, :])).any(axis=1)
            agree = float(np.mean(sound == loud))
            if agree > best[0] + 1e-9:
                best = (agree, float(offset), float(scale))
    return best[1], best[2]


def score_track(f0: np.ndarray, ref: np.ndarray, rest: np.ndarray) -> dict:
    """Counts over note-interior frames (``ref > 0``) and rest frames: see ``summarise``."""
    notes = ref > 0
    voiced = f0 > 0
    both = notes & voiced
    cents = 1200.0 * np.log2(f0[both] / ref[both])
    octaves = np.round(cents / 1200.0)
    chroma = np.abs(cents - 1200.0 * octaves) <= RPA_CENTS
    return {"note_frames": int(notes.sum()), "voiced_notes": int(both.sum()),
            "rpa": int((np.abs(cents) <= RPA_CENTS).sum()), "rca": int(chroma.sum()),
            "octave": int((chroma & (octaves != 0)).sum()), "gross": int((np.abs(cents) > GROSS_CENTS).sum()),
            "rest_frames": int(rest.sum()), "false_alarms": int((rest & voiced).sum())}


def summarise(counts: dict) -> dict:
    """Rates from summed counts. rpa, rca, octave_error_rate, gross_error_rate are over all note-interior frames
    (an unvoiced frame counts as wrong: the model then sings nothing); voicing_recall over note interiors,
    voicing_false_alarm over rests."""
    n = max(1, counts["note_frames"])
    return {"raw_pitch_accuracy": counts["rpa"] / n, "raw_chroma_accuracy": counts["rca"] / n,
            "octave_error_rate": counts["octave"] / n, "gross_error_rate": counts["gross"] / n,
            "voicing_recall": counts["voiced_notes"] / n,
            "voicing_false_alarm": counts["false_alarms"] / max(1, counts["rest_frames"])}


def add(total: dict, part: dict) -> dict:
    return {k: total.get(k, 0) + v for k, v in part.items()}


def evaluate(items: list, folder: Path, methods: list[str]) -> dict:
    audio = {it["wav"]: load_audio(folder / it["wav"], sr=SAMPLE_RATE) for it in items}
    seconds = sum(len(w) for w in audio.values()) / SAMPLE_RATE
    truth = {}
    for it in items:
        wav = audio[it["wav"]]
        offset, scale = score_timing(wav, it["events"])
        truth[it["wav"]] = truth_frames(it["events"], frame_times(len(wav)), offset, scale) + ((offset, scale),)
    results = {}
    for method in methods:
        compute_f0(audio[items[0]["wav"]][:16000], method=method)  # model load and warm-up are not timed
        raw, fixed, per_voice = {}, {}, {}
        wall, cpu = 0.0, 0.0
        for it in items:
            w0, c0 = time.perf_counter(), time.process_time()
            f0 = compute_f0(audio[it["wav"]], method=method)
            wall, cpu = wall + time.perf_counter() - w0, cpu + time.process_time() - c0
            ref, rest, _ = truth[it["wav"]]
            part = score_track(f0, ref, rest)
            raw = add(raw, part)
            fixed = add(fixed, score_track(fix_octaves(f0), ref, rest))
            key = f"{it['voice']}_{it['range']}"
            per_voice[key] = add(per_voice.get(key, {}), part)
        results[method] = {**{k: round(v, 4) for k, v in summarise(raw).items()},
                           "with_f0_fix_octave": {k: round(v, 4) for k, v in summarise(fixed).items()},
                           "raw_pitch_accuracy_per_voice": {k: round(summarise(v)["raw_pitch_accuracy"], 4)
                                                            for k, v in per_voice.items()},
                           "wall_s_per_audio_s": round(wall / seconds, 4), "cpu_s_per_audio_s": round(cpu / seconds, 4),
                           "counts": raw}
    return {"audio_seconds": round(seconds, 2), "files": len(items), "truth_offset_s_and_tempo_scale":
            {k: [round(v[2][0], 3), round(v[2][1], 3)] for k, v in truth.items()}, "methods": results}


def table(report: dict) -> str:
    head = ("| method | RPA | RCA | octave err | gross err | voicing recall | false alarm | RPA with --f0_fix octave "
            "| s per audio s (wall / CPU) |\n|---|---|---|---|---|---|---|---|---|")
    rows = [f"| {m} | {r['raw_pitch_accuracy']:.3f} | {r['raw_chroma_accuracy']:.3f} | {r['octave_error_rate']:.3f} | "
            f"{r['gross_error_rate']:.3f} | {r['voicing_recall']:.3f} | {r['voicing_false_alarm']:.3f} | "
            f"{r['with_f0_fix_octave']['raw_pitch_accuracy']:.3f} | {r['wall_s_per_audio_s']:.3f} / "
            f"{r['cpu_s_per_audio_s']:.3f} |" for m, r in report["methods"].items()]
    return "\n".join([head, *rows])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="F0 extractors scored against festival's sung score")
    ap.add_argument("--corpus", default="bench/cache/pitch_corpus", help="rendered corpus (made when missing)")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--json", default=None, help="also write the report here")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (crepe, fcpe)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    folder = Path(args.corpus)
    items = render_corpus(folder)
    report = {"bench": "pitch", "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
              f"{args.threads} torch threads",
              "note": "timings on a shared machine (other jobs running) inflate wall time; cpu_s is process CPU "
                      "time (crepe and fcpe use several threads, so it can exceed wall time)",
              "note_interior": f"each note minus its first {NOTE_HEAD * 1000:g} ms and last {NOTE_TAIL * 1000:g} ms",
              "voicing_false_alarm_on": "rests (minus 30 ms at each end); unvoiced consonants are not labelled",
              **evaluate(items, folder, args.methods)}
    text = json.dumps(report, indent=2)
    print(text)
    print(table(report), file=sys.stderr)
    if args.json:
        write_text(args.json, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

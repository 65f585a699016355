"""Automatic key: each singer's F0 statistics, and the whole-semitone shift that puts a song into a singer's range.

A singer's statistics live beside its speaker vector (``data_gvc/singer/alto.spk.npy`` ->
``data_gvc/singer/alto.f0.json``); step 6 (``prepare/preprocess_speaker_ave.py``) writes them from the singer's
``data_gvc/pitch/<singer>/*.pit.npy`` (10 ms frames, Hz, 0 = unvoiced). ``gvc_inference.py --shift auto`` and the
studio call :func:`suggest_shift` with a song's F0 and those statistics.

The rule of :func:`suggest_shift`, in semitones, over the whole shifts ``k`` in ``[-24, 24]``:
1. the song's median F0 moved by ``k`` lies inside the singer's 5-95 % range (if no ``k`` does: the closest);
2. of those, the ones that leave the least of the song's 5-95 % range outside the singer's 5-95 % range (within
   half a semitone of the least);
3. of those, 0 when it is one of them (a song that already fits keeps its key), else the one nearest to the shift
   that puts the song's median on the singer's median (the song sits where the singer sings most).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

from pitch.notes import hz_to_midi, midi_to_hz, note_name

log = logging.getLogger(__name__)

MAX_SHIFT = 24  # semitones, the bound of gvc_inference.py's --shift
STATS_SUFFIX = ".f0.json"
SPK_SUFFIX = ".spk.npy"
STEP_COMMAND = "python prepare/preprocess_speaker_ave.py data_gvc/speaker/ data_gvc/singer"
# coarse histogram for plots: one bin per semitone, centred on the notes G1 (49 Hz) .. C#6 (1109 Hz), which covers the
# trackers' 50-1100 Hz
HIST_MIDI = np.arange(31, 86)
_EPS = 1e-6  # semitones: ties in rule 1
# semitones: in rule 2 shifts within this of the best count as equally good; percentiles of a tracker's F0 are not
# more exact than that, and a song that sticks out of the range by a hair keeps its key
FIT_TOLERANCE = 0.5


class KeyStatsError(ValueError):
    """A singer without (valid) F0 statistics; one line naming the file and the step that writes it."""


def stats_path(spk_path: str | Path) -> Path:
    """Where a singer's F0 statistics live: ``<dir>/<singer>.spk.npy`` -> ``<dir>/<singer>.f0.json`` (any other
    name: its suffix replaced, ``singer0001.npy`` -> ``singer0001.f0.json``)."""
    spk_path = Path(spk_path)
    name = spk_path.name
    stem = name[: -len(SPK_SUFFIX)] if name.endswith(SPK_SUFFIX) else spk_path.stem
    return spk_path.with_name(stem + STATS_SUFFIX)


def f0_stats(f0: np.ndarray) -> dict:
    """Statistics of an F0 track ``[T]`` at 100 Hz (Hz, 0 = unvoiced), or of concatenated voiced frames.

    Returns ``p5_hz``, ``p50_hz``, ``p95_hz`` (percentiles of the voiced frames, ``None`` when there are none),
    ``voiced_frames``, ``frames`` (all frames given) and ``hist_edges_hz`` / ``hist_counts``: voiced frames per
    semitone (bins centred on the notes G1..C#6; frames outside are counted in the end bins), for plots.
    """
    f0 = np.asarray(f0, dtype=np.float64).reshape(-1)
    voiced = f0[np.isfinite(f0) & (f0 > 0)]
    edges = midi_to_hz(np.concatenate([HIST_MIDI - 0.5, [HIST_MIDI[-1] + 0.5]]))
    counts = np.histogram(np.clip(voiced, edges[0], edges[-1]), bins=edges)[0] if voiced.size else np.zeros(
        len(HIST_MIDI), dtype=np.int64)
    pct = (np.percentile(voiced, [5, 50, 95]) if voiced.size else [None] * 3)
    return {
        "p5_hz": None if pct[0] is None else round(float(pct[0]), 2),
        "p50_hz": None if pct[1] is None else round(float(pct[1]), 2),
        "p95_hz": None if pct[2] is None else round(float(pct[2]), 2),
        "voiced_frames": int(voiced.size),
        "frames": int(f0.size),
        "hist_edges_hz": [round(float(e), 2) for e in edges],
        "hist_counts": [int(c) for c in counts],
    }


def write_singer_stats(spk_path: str | Path, stats: dict) -> Path:
    """Write ``stats`` (from :func:`f0_stats`, plus any provenance keys) beside ``spk_path``, atomically."""
    from common.io import write_text

    path = stats_path(spk_path)
    write_text(path, json.dumps(stats, indent=1) + "\n")
    return path


def _missing(path: Path, spk_path: Path, problem: str) -> KeyStatsError:
    return KeyStatsError(f"{path}: {problem} for singer {spk_path.name}; step 6 writes them beside the .spk.npy "
                         f"from the singer's pitch files: {STEP_COMMAND}")


def load_singer_stats(spk_path: str | Path) -> dict:
    """The F0 statistics of the singer whose speaker vector is ``spk_path`` (see :func:`stats_path`).

    Raises :class:`KeyStatsError` (one line: the file, and the command that writes it) when they are missing or not
    valid statistics.
    """
    spk_path = Path(spk_path)
    path = stats_path(spk_path)
    if not path.is_file():
        raise _missing(path, spk_path, "no F0 statistics")
    try:
        stats = json.loads(path.read_text(encoding="utf-8"))
        p = [float(stats[k]) for k in ("p5_hz", "p50_hz", "p95_hz")]
        ok = all(math.isfinite(v) and v > 0 for v in p) and p[0] <= p[1] <= p[2] and int(stats["voiced_frames"]) > 0
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise _missing(path, spk_path, f"unreadable F0 statistics ({exc.__class__.__name__}: "
                                       f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not ok:
        raise _missing(path, spk_path, "invalid F0 statistics (need 0 < p5_hz <= p50_hz <= p95_hz, voiced frames)")
    return stats


def mix_stats(stats: list[dict], weights: list[float] | None = None) -> dict:
    """The statistics of a mix of singers (several ``--spk`` with ``--spk_weights``): each percentile is the
    weighted mean of the singers' percentiles in semitones (a weighted geometric mean in Hz), as the mixed speaker
    vector is a weighted mean of voices; weights are normalised, zero-weight singers left out. Histograms are the
    weighted sum of the singers' normalised histograms (total = the voiced frames of the kept singers)."""
    w = np.asarray(weights if weights else [1.0] * len(stats), dtype=np.float64)
    if len(w) != len(stats) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError("mix_stats: one finite weight >= 0 per singer, with a positive sum")
    keep = [(s, x) for s, x in zip(stats, w) if x > 0]
    w = np.array([x for _, x in keep]) / sum(x for _, x in keep)
    out = {k: round(float(midi_to_hz(sum(x * hz_to_midi(s[k]) for (s, _), x in zip(keep, w)))), 2)
           for k in ("p5_hz", "p50_hz", "p95_hz")}
    out["voiced_frames"] = int(sum(int(s["voiced_frames"]) for s, _ in keep))
    hists = [s for s, _ in keep if s.get("hist_counts") and sum(s["hist_counts"]) > 0]
    if len(hists) == len(keep) and len({tuple(s["hist_edges_hz"]) for s in hists}) == 1:
        mixed = sum(x * np.asarray(s["hist_counts"], dtype=np.float64) / sum(s["hist_counts"])
                    for s, x in zip(hists, w))
        out["hist_edges_hz"] = list(hists[0]["hist_edges_hz"])
        out["hist_counts"] = [int(round(c)) for c in mixed * out["voiced_frames"]]
    return out


def _outside(lo: float, hi: float, s_lo: float, s_hi: float) -> float:
    """Semitones of the interval ``[lo, hi]`` that lie outside ``[s_lo, s_hi]``."""
    inside = max(0.0, min(hi, s_hi) - max(lo, s_lo))
    return (hi - lo) - inside


def suggest_shift(source_f0: np.ndarray, stats: dict) -> tuple[int, str]:
    """The whole-semitone shift in ``[-24, 24]`` for a song of F0 ``source_f0`` ``[T]`` (100 Hz, Hz, 0 = unvoiced)
    sung by the singer of ``stats`` (:func:`load_singer_stats` / :func:`mix_stats`), and a one-line reason.

    See the module docstring for the rule. A song without voiced frames gets 0.
    """
    src = f0_stats(source_f0)
    if not src["voiced_frames"]:
        return 0, "no voiced frames in the source: shift 0"
    lo, med, hi = (float(hz_to_midi(src[k])) for k in ("p5_hz", "p50_hz", "p95_hz"))
    s_lo, s_med, s_hi = (float(hz_to_midi(stats[k])) for k in ("p5_hz", "p50_hz", "p95_hz"))
    ks = np.arange(-MAX_SHIFT, MAX_SHIFT + 1)
    # rule 1: the median inside the singer's range, else as close as it gets
    miss = np.array([max(0.0, s_lo - (med + k), (med + k) - s_hi) for k in ks])
    ks = ks[miss <= miss.min() + _EPS]
    # rule 2: the least of the song's 5-95 % range outside the singer's
    out = np.array([_outside(lo + k, hi + k, s_lo, s_hi) for k in ks])
    best_outside = float(out.min())
    ks = ks[out <= best_outside + FIT_TOLERANCE]
    # rule 3: keep the key if it fits, else the fitting shift nearest to matching the singer's median
    to_median = s_med - med
    k = 0 if 0 in ks else int(ks[np.argmin(np.abs(ks - to_median))])
    width = hi - lo
    fits = 1.0 if width <= _EPS else (width - _outside(lo + k, hi + k, s_lo, s_hi)) / width
    if miss.min() > _EPS:
        why = "no whole shift puts the median inside the singer's range; this one comes closest"
    elif k == 0 and 0 in ks:
        why = "the source already fits" if best_outside <= FIT_TOLERANCE else "no shift fits more of it"
    else:
        why = "of the shifts that fit the most, the one nearest to the singer's median"
    src_note, singer_note = note_name(src["p50_hz"], cents=False), note_name(stats["p50_hz"], cents=False)
    reason = (f"shift {k:+d}: source median {src['p50_hz']:.0f} Hz ({src_note}), 5-95 % "
              f"{src['p5_hz']:.0f}-{src['p95_hz']:.0f} Hz; singer 5-95 % {stats['p5_hz']:.0f}-{stats['p95_hz']:.0f} Hz "
              f"(median {stats['p50_hz']:.0f} Hz, {singer_note}); shifted median "
              f"{src['p50_hz'] * 2 ** (k / 12):.0f} Hz, {fits:.0%} of the source's 5-95 % range inside ({why})")
    return k, reason


class AutoShift:
    """``--shift auto`` as a value of the conversion's ``shift``: called with a song's F0 ``[T]`` (100 Hz, Hz) and
    its name, it returns :func:`suggest_shift`'s semitones and logs the reason. Picklable (folder mode workers)."""

    def __init__(self, stats: dict, singer: str = "the singer"):
        self.stats = stats
        self.singer = singer

    def __call__(self, f0: np.ndarray, song: str = "source") -> int:
        k, reason = suggest_shift(f0, self.stats)
        log.info("%s: --shift auto for %s: %s", song, self.singer, reason)
        return k


def _singer_name(spk_path: Path) -> str:
    return stats_path(spk_path).name[: -len(STATS_SUFFIX)]


def auto_shift(spk_paths: list[str | Path], weights: list[float] | None = None) -> AutoShift:
    """``--shift auto`` for the singer of ``spk_paths`` (one ``.spk.npy``, or several mixed with ``weights`` as
    ``--spk_weights``: :func:`mix_stats`). Raises :class:`KeyStatsError` for a singer without statistics."""
    paths = [Path(p) for p in spk_paths]
    w = list(weights) if weights else [1.0] * len(paths)
    used = [(p, x) for p, x in zip(paths, w) if x > 0] if len(w) == len(paths) else list(zip(paths, w))
    stats = [load_singer_stats(p) for p, _ in used]
    if len(used) == 1:
        return AutoShift(stats[0], _singer_name(used[0][0]))
    total = sum(x for _, x in used)
    label = " + ".join(f"{x / total:.2g} {_singer_name(p)}" for p, x in used)
    return AutoShift(mix_stats(stats, [x for _, x in used]), f"the mix {label}")

"""Objective metrics of conversions: F0 fidelity, speaker similarity and, with a parallel recording, MCD after DTW.

    python gvc_eval.py --converted gvc_out.wav --source test.wav --target_spk data_gvc/singer/alto.spk.npy
    python gvc_eval.py --converted out_dir/ --source songs_dir/ --target_spk alto.spk.npy --reference alto_dir/

| metric | unit, better | meaning |
|---|---|---|
| ``f0_rmse_cents`` | cents, lower | RMS pitch error against the source F0 (after ``--shift``), frames voiced in both |
| ``f0_corr`` | -1..1, higher | Pearson correlation of those two F0 tracks (log scale), frames voiced in both |
| ``f0_rpa`` | fraction, higher | raw pitch accuracy: fraction of those frames within 50 cents |
| ``f0_gross_error`` | fraction, lower | fraction of those frames more than 200 cents off |
| ``f0_lag_ms`` | ms | the global lag (up to +-50 ms) compensated before the four F0 numbers above |
| ``vuv_error`` | fraction, lower | fraction of frames where the voicing decisions differ |
| ``spk_sim_target`` | cosine, higher | the conversion's speaker embedding vs the target's centroid (``--target_spk``) |
| ``spk_sim_source`` | cosine, lower | the same vs the source singer (``--source_spk``, else the source audio's) |
| ``mcd_db`` | dB, lower | mel-cepstral distortion (24 coefficients, c0 excluded) to ``--reference`` after DTW |

The F0 numbers are taken after folding each track's isolated octave jumps (``--f0_fix octave``, the default here:
tracker errors on either recording are not the conversion's) at the best global lag within +-50 ms. Prints each
metric with its unit, its direction and the frames it was computed on (or why it is undefined, e.g. no frame voiced
in both), and writes JSON (``--json``; undefined values are null). Folder mode pairs files by relative path and adds
the means over the files.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from common.audio import AudioError, list_audio, load_audio
from common.checkpoint import CheckpointError
from common.io import write_text
from common.runtime import tune_allocator
from pitch.f0 import METHODS, fix_octaves
from speaker.backends import BACKENDS, check_backend, load_speaker_backend, read_backend_tag, read_speaker_file

log = logging.getLogger("gvc_eval")

EVAL_SR = 16000


MAX_LAG_FRAMES = 5  # a global lag of up to +-50 ms between the conversion and the source is compensated
RPA_CENTS = 50.0  # raw pitch accuracy: within half a semitone
GROSS_CENTS = 200.0  # a gross pitch error: more than two semitones off


def f0_metrics(f0_conv: np.ndarray, f0_src: np.ndarray, shift: float = 0.0, fold: bool = True,
               max_lag: int = MAX_LAG_FRAMES) -> dict:
    """F0 fidelity between two 10 ms F0 tracks (Hz, 0 = unvoiced): the conversion against the source's F0 x
    ``2 ** (shift / 12)``.

    A perfect conversion must score perfect although the tracker errs on both: with ``fold`` each track's isolated
    octave jumps are folded back first (``pitch.f0.fix_octaves``, the rule of ``--f0_fix octave``), and the
    conversion is compared at the global lag within +-``max_lag`` frames where the cents error varies least around
    its median (a constant offset does not choose the lag; ties: the smallest lag). Keys: ``frames``,
    ``voiced_both``, ``vuv_error`` (at lag 0, the output's own timing), ``f0_lag_ms`` (conversion later than the
    source: positive), and over the frames voiced in both at that lag ``f0_rmse_cents``, ``f0_corr`` (Pearson,
    log F0), ``f0_rpa`` (fraction within 50 cents) and ``f0_gross_error`` (fraction more than 200 cents off); NaN
    where fewer than 2 frames are voiced in both.
    """
    n = min(len(f0_conv), len(f0_src))
    a, b = np.asarray(f0_conv[:n], float), np.asarray(f0_src[:n], float) * 2.0 ** (shift / 12.0)
    va, vb = a > 0, b > 0
    out = {"frames": int(n), "voiced_both": int((va & vb).sum()),
           "vuv_error": float(np.mean(va != vb)) if n else float("nan")}
    if fold:
        a, b = fix_octaves(a), fix_octaves(b)
    best = None
    for lag in sorted(range(-max_lag, max_lag + 1), key=abs):  # a[t + lag] against b[t]
        x, y = (a[lag:], b[:n - lag]) if lag >= 0 else (a[:n + lag], b[-lag:])
        both = (x > 0) & (y > 0)
        if both.sum() < 2:
            continue
        cents = 1200.0 * np.log2(x[both] / y[both])
        spread = float(np.mean((cents - np.median(cents)) ** 2))  # a constant offset (a wrong shift) does not pick lags
        if best is None or spread < best[0] - 1e-9:
            best = (spread, lag, cents, x[both], y[both])
    if best is None:
        return {**out, "f0_rmse_cents": float("nan"), "f0_corr": float("nan"), "f0_rpa": float("nan"),
                "f0_gross_error": float("nan"), "f0_lag_ms": float("nan")}
    _, lag, cents, x, y = best
    la, lb = np.log(x), np.log(y)
    return {**out, "f0_rmse_cents": float(np.sqrt(np.mean(cents**2))),
            "f0_corr": float(np.corrcoef(la, lb)[0, 1]) if la.std() > 0 and lb.std() > 0 else float("nan"),
            "f0_rpa": float(np.mean(np.abs(cents) <= RPA_CENTS)),
            "f0_gross_error": float(np.mean(np.abs(cents) > GROSS_CENTS)), "f0_lag_ms": 10.0 * lag}


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def mel_cepstrum(wav: np.ndarray, sr: int, order: int = 24) -> np.ndarray:
    """WORLD mel-cepstrum ``[T, order + 1]`` at 5 ms frames (pyworld CheapTrick + code_spectral_envelope)."""
    import pyworld as pw

    x = wav.astype(np.float64)
    f0, t = pw.dio(x, sr, frame_period=5.0)
    f0 = pw.stonemask(x, f0, t, sr)
    sp = pw.cheaptrick(x, f0, t, sr)
    return pw.code_spectral_envelope(sp, sr, order + 1)


def mcd_dtw_frames(wav_a: np.ndarray, wav_b: np.ndarray, sr: int, order: int = 24) -> tuple[float, int]:
    """(mel-cepstral distortion in dB, number of DTW-aligned 5 ms frame pairs it averages) between two recordings,
    c0 (energy) excluded."""
    import librosa

    ca, cb = mel_cepstrum(wav_a, sr, order)[:, 1:], mel_cepstrum(wav_b, sr, order)[:, 1:]
    _, path = librosa.sequence.dtw(X=ca.T, Y=cb.T, metric="euclidean")
    diff = ca[path[:, 0]] - cb[path[:, 1]]
    return float(10.0 / np.log(10.0) * np.mean(np.sqrt(2.0 * np.sum(diff**2, axis=1)))), len(path)


def mcd_dtw(wav_a: np.ndarray, wav_b: np.ndarray, sr: int, order: int = 24) -> float:
    """Mel-cepstral distortion in dB between two recordings, frames aligned by DTW, c0 (energy) excluded."""
    return mcd_dtw_frames(wav_a, wav_b, sr, order)[0]


class Evaluator:
    """Holds the speaker encoder and the F0 method so a folder is evaluated with one model load."""

    def __init__(self, backend: str = "resemblyzer", checkpoint: str | None = None, f0_method: str = "praat",
                 device: str = "cpu", f0_fix: str = "octave"):
        self.backend_name = backend
        self.checkpoint = checkpoint
        self.f0_method = f0_method
        self.f0_fix = f0_fix  # "octave": the F0 metrics fold each track's tracker octave errors (f0_metrics' fold)
        self.device = device
        self._backend = None

    @property
    def backend(self):
        if self._backend is None:
            self._backend = load_speaker_backend(self.backend_name, self.checkpoint, self.device)
        return self._backend

    def f0(self, wav16: np.ndarray) -> np.ndarray:
        from pitch.f0 import compute_f0

        return compute_f0(wav16, EVAL_SR, method=self.f0_method, device=self.device)

    def evaluate(self, converted: Path, source: Path | None = None, target_spk: np.ndarray | None = None,
                 source_spk: np.ndarray | None = None, reference: Path | None = None, shift: float = 0.0) -> dict:
        conv = load_audio(converted, EVAL_SR)
        row: dict = {"converted": str(converted), "seconds": len(conv) / EVAL_SR}
        src = load_audio(source, EVAL_SR) if source is not None else None
        if src is not None:
            f0_conv, f0_src = self.f0(conv), self.f0(src)
            row.update(f0_metrics(f0_conv, f0_src, shift, fold=self.f0_fix == "octave"))
            n = min(len(f0_conv), len(f0_src))  # for the reason an F0 metric is undefined
            row["voiced_converted"], row["voiced_source"] = int((f0_conv[:n] > 0).sum()), int((f0_src[:n] > 0).sum())
        if target_spk is not None or source_spk is not None or src is not None:
            emb = self.backend.embed(conv)
            if target_spk is not None:
                row["spk_sim_target"] = cosine(emb, target_spk)
            if source_spk is None and src is not None:
                source_spk = self.backend.embed(src)
            if source_spk is not None:
                row["spk_sim_source"] = cosine(emb, source_spk)
        if reference is not None:
            row["mcd_db"], row["mcd_frames"] = mcd_dtw_frames(conv, load_audio(reference, EVAL_SR), EVAL_SR)
        return row


def _load_spk(path: str | None, backend: str) -> np.ndarray | None:
    """A ``.spk.npy`` made by ``backend`` (its ``backend.json`` tag, when it has one, must agree: similarities
    between two encoders' spaces mean nothing)."""
    if path is None:
        return None
    v = read_speaker_file(path)
    check_backend(path, backend, "its speaker embedding (--backend must match)")
    return v


def _pair(base: Path | None, rel: Path) -> Path | None:
    if base is None:
        return None
    if base.is_file():
        return base
    for cand in (base / rel, *(base / rel.with_suffix(s) for s in (".wav", ".flac", ".ogg"))):
        if cand.is_file():
            return cand
    return None


COLUMNS = ["f0_rmse_cents", "f0_corr", "f0_rpa", "f0_gross_error", "f0_lag_ms", "vuv_error", "spk_sim_target",
           "spk_sim_source", "mcd_db"]
# how each metric reads: (what it is, unit, which way is better)
METRICS = {
    "f0_rmse_cents": ("F0 error vs the source (RMS, after --shift)", "cents", "lower"),
    "f0_corr": ("F0 contour correlation (log F0)", "", "higher"),
    "f0_rpa": ("F0 within 50 cents (raw pitch accuracy)", "fraction", "higher"),
    "f0_gross_error": ("F0 more than 200 cents off", "fraction", "lower"),
    "f0_lag_ms": ("lag compensated before the F0 numbers", "ms", ""),
    "vuv_error": ("voicing disagreement (V/UV error)", "fraction", "lower"),
    "spk_sim_target": ("speaker similarity to the target", "cosine", "higher"),
    "spk_sim_source": ("speaker similarity to the source", "cosine", "lower"),
    "mcd_db": ("mel-cepstral distortion to --reference", "dB", "lower"),
}


LABEL_WIDTH = max(len(v[0]) for v in METRICS.values()) + 2


def describe(key: str) -> tuple[str, str, str]:
    """(label, unit, "lower is better" / "higher is better") of a metric (a metric not in METRICS: its key)."""
    label, unit, better = METRICS.get(key, (key, "", ""))
    return label, unit, f"{better} is better" if better else ""


def basis(row: dict, key: str) -> tuple[bool, str]:
    """(defined, what the value was computed on; or why it is undefined) for ``row[key]``."""
    value = row.get(key)
    defined = value is not None and bool(np.isfinite(value))
    if key.startswith("f0_") or key == "vuv_error":
        n, both = row.get("frames", 0), row.get("voiced_both", 0)
        if key == "vuv_error":
            return defined, f"{n} frames (10 ms)" if defined else "undefined: no frame to compare (empty audio)"
        if defined:
            return True, f"{both} frames voiced in both (of {n}, 10 ms)"
        if both < 2:
            return False, (f"undefined: {both} frames voiced in both (conversion voiced in "
                           f"{row.get('voiced_converted', '?')}, source in {row.get('voiced_source', '?')} of {n})")
        return False, "undefined: the F0 is constant in one of them (no contour to correlate)"
    if key.startswith("spk_sim"):
        return defined, f"the whole file ({row.get('seconds', 0):.1f} s, one embedding)"
    if key == "mcd_db":
        return defined, f"{row.get('mcd_frames', 0)} DTW-aligned frame pairs (5 ms)"
    return defined, ""


def format_value(value, unit: str) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:.1f}" if unit in ("cents", "dB", "ms") else f"{value:.3f}"


def metric_lines(rows: list[dict], names: list[str]) -> list[str]:
    """A header and one line per metric with a value column per row (headed by ``names``): label, values, unit,
    direction and what it was computed on (the first row's), or, where a row's value is undefined, why."""
    keys = [c for c in COLUMNS if any(c in r for r in rows)]
    width = max([len(n) for n in names] + [8]) + 2
    lines = ["metric".ljust(LABEL_WIDTH) + "".join(n.rjust(width) for n in names) + "  unit      better            "
             "computed on"]
    for key in keys:
        label, unit, better = describe(key)
        values = "".join(format_value(r.get(key), unit).rjust(width) for r in rows)
        notes = [(name, *basis(r, key)) for name, r in zip(names, rows) if key in r]
        undefined = [f"{name}: {why}" if len(rows) > 1 else why for name, ok, why in notes if not ok]
        on = "; ".join(undefined) if undefined else notes[0][2]
        lines.append(label.ljust(LABEL_WIDTH) + values + f"  {unit:8s}  {better:16s}  {on}")
    return lines


def report(rows: list[dict]) -> str:
    """Each file's metrics (unit, direction, frames) and, for several files, their means over the files."""
    out = []
    for r in rows:
        out += [Path(r["converted"]).name] + ["  " + line for line in metric_lines([r], ["value"])] + [""]
    if len(rows) > 1:
        cols = [c for c in COLUMNS if any(c in r for r in rows)]
        out.append(f"mean over the {len(rows)} files (each metric over the files where it is defined)")
        for key in cols:
            label, unit, better = describe(key)
            vals = [r[key] for r in rows if key in r and r[key] is not None and np.isfinite(r[key])]
            mean = float(np.mean(vals)) if vals else None
            on = f"{len(vals)} of the files" if vals else "undefined in every file"
            out.append("  " + label.ljust(LABEL_WIDTH) + format_value(mean, unit).rjust(10) + f"  {unit:8s}  "
                       f"{better:16s}  {on}")
    return "\n".join(out).rstrip()


def _mean_or_none(values: list) -> float | None:
    """The mean of the finite values (None if there is none: no 'mean of empty slice' warning)."""
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _finite_or_none(x) -> float | None:
    """JSON has no NaN: an undefined metric (e.g. F0 error with no frame voiced in both) is null."""
    x = float(x)
    return x if np.isfinite(x) else None


def main(argv=None) -> int:
    tune_allocator()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    ap = argparse.ArgumentParser(description="Objective metrics of converted singing.")
    ap.add_argument("--converted", required=True, help="converted wav or folder")
    ap.add_argument("--source", default=None, help="source song(s) the conversion was made from")
    ap.add_argument("--target_spk", default=None, help="target singer's .spk.npy (made by --backend)")
    ap.add_argument("--source_spk", default=None, help="source singer's .spk.npy (default: embed the source audio)")
    ap.add_argument("--reference", default=None, help="parallel recording(s) of the target singer, for MCD")
    ap.add_argument("--shift", type=float, default=0.0, help="the --shift used for the conversion")
    ap.add_argument("--backend", choices=BACKENDS, default=None,
                    help="speaker encoder for similarity; the --target_spk/--source_spk files must be its own "
                         "(default: the one their backend.json names, else resemblyzer)")
    ap.add_argument("--checkpoint", default=None, help="speaker encoder checkpoint (lstm)")
    ap.add_argument("--f0", "--method", dest="f0_method", default="praat",
                    choices=METHODS, help="F0 method (default praat)")
    ap.add_argument("--f0_fix", choices=["none", "octave"], default="octave",
                    help="octave (default): the F0 metrics fold each track's isolated octave jumps (a tracker's "
                         "errors, not the conversion's); none: raw tracks")
    ap.add_argument("--json", default=None, help="write all rows and the means here")
    args = ap.parse_args(argv)
    try:
        if args.backend is None:
            tags = [read_backend_tag(p) for p in (args.target_spk, args.source_spk) if p and Path(p).is_file()]
            args.backend = next((t for t in tags if t), "resemblyzer")
        ev = Evaluator(args.backend, args.checkpoint, args.f0_method, f0_fix=args.f0_fix)
        target = _load_spk(args.target_spk, args.backend)
        source_spk = _load_spk(args.source_spk, args.backend)
        conv = Path(args.converted)
        files = [conv] if conv.is_file() else list_audio(conv)
        if not files:
            raise ValueError(f"{conv}: no converted audio found")
        for flag, path in (("--source", args.source), ("--reference", args.reference)):
            if path and not Path(path).exists():
                raise ValueError(f"{path}: {flag} file or folder not found")
        if target is not None or source_spk is not None or args.source:
            if args.backend == "lstm":  # a missing file names this script's flag and the offline alternative
                from common.checkpoint import Pretrained, require_pretrained
                from speaker.lstm import DEFAULT_CHECKPOINT

                require_pretrained([Pretrained(args.checkpoint or DEFAULT_CHECKPOINT, "speaker", "--checkpoint",
                                               "--backend resemblyzer (no download)")])
            ev.backend  # noqa: B018 - load the speaker encoder once, before any file (a bad checkpoint: one line)
        rows, failed = [], []
        for f in files:
            rel = f.relative_to(conv) if conv.is_dir() else Path(f.name)
            src = _pair(Path(args.source) if args.source else None, rel)
            ref = _pair(Path(args.reference) if args.reference else None, rel)
            missing = [flag for flag, given, found in (("--source", args.source, src),
                                                       ("--reference", args.reference, ref)) if given and not found]
            if missing:  # an unpaired file: named, not a row of blanks
                failed.append(f"{f}: no {' or '.join(missing)} file of the same name")
                continue
            try:
                rows.append(ev.evaluate(f, src, target, source_spk, ref, args.shift))
            except (AudioError, ValueError) as exc:
                failed.append(f"{f}: {exc}")
    except (AudioError, ValueError, OSError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report(rows))
    for f in failed:
        print(f"FAILED {f}", file=sys.stderr)
    if args.json:
        cols = [c for c in COLUMNS if any(c in r for r in rows)]
        means = {c: _mean_or_none([r[c] for r in rows if c in r]) for c in cols}
        clean = [{k: _finite_or_none(v) if isinstance(v, float) else v for k, v in r.items()} for r in rows]
        units = {c: dict(zip(("label", "unit", "better"), METRICS[c])) for c in cols if c in METRICS}
        write_text(args.json, json.dumps({"rows": clean, "mean": means, "failed": failed, "metrics": units},
                                         indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

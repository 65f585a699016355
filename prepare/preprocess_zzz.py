"""Step 9: check the whole feature set before training; prints a report, exit status 1 on any problem.

    python prepare/preprocess_zzz.py

Checks every item of ``files/train.txt`` and ``files/valid.txt`` (all four files present and readable, dims,
finite values, mel / units / F0 lengths consistent) and that every wav of ``data_gvc/waves-32k`` made it into the
index. Then a dataset check per singer: clips, minutes, voiced ratio, silence and clipping ratios of the audio, the
F0 range (5th-95th percentile) with a histogram PNG (``--plots``), and warnings for what hurts training: too little
data, clipping, mostly silence, suspected F0 octave errors (frames more than 600 cents from the median of their
+-150 ms, the rule of ``--f0_fix octave``, and stray frames at 900 Hz and above) with the files that hold them, and
(with ``--songs``) source songs whose F0 leaves the singer's range.
Warnings do not change the exit status; problems do.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from common.audio import AudioError, list_audio, load_audio, read_audio
from common.config import ConfigError, load_config
from common.features import FeatureError, check_item, read_filelist, read_pit
from common.io import write_text

MIN_MINUTES = 10.0  # less than this per singer: expect timbre leakage and a narrow range
MAX_CLIPPING = 1e-3  # fraction of samples in clipped runs
MAX_SILENCE = 0.5  # fraction of 10 ms frames below -60 dBFS
SILENCE_RMS = 1e-3
STRAY_HZ = 900.0  # voiced frames this high are almost always a tracker's octave error in a training set
MAX_LISTED_FILES = 5  # files named per singer on screen (the JSON lists them all)


def check_filelists(paths: list[Path], n_mels: int, dim: int, allow_empty: tuple[Path, ...] = ()
                    ) -> tuple[list[str], dict]:
    problems: list[str] = []
    from pitch.f0 import octave_outliers

    stats: dict = defaultdict(lambda: {"clips": 0, "frames": 0, "voiced": 0, "f0": [], "octave": 0, "stray": 0,
                                       "octave_files": {}})
    for path in paths:
        try:
            items = read_filelist(path)
        except FeatureError as exc:
            problems.append(str(exc))
            continue
        if not items and path not in allow_empty:
            problems.append(f"{path}: empty filelist")
        for item in tqdm(items, desc=f"check {path.name}", unit="item", disable=None):
            item_problems, t_mel = check_item(item, n_mels, dim)
            problems.extend(item_problems)
            if item_problems:
                continue
            singer = item.mel.parent.name
            pit = read_pit(item.pit)
            s = stats[singer]
            s["clips"] += 1
            s["frames"] += t_mel
            s["voiced"] += int((pit > 0).sum())
            s["f0"].append(pit[pit > 0])
            octave, stray = int((octave_outliers(pit) != 0).sum()), int((pit >= STRAY_HZ).sum())
            s["octave"] += octave
            s["stray"] += stray
            if octave or stray:
                s["octave_files"][str(item.pit)] = {"octave_frames": octave, "frames_over_900hz": stray}
    return problems, stats


def unindexed(data_root: Path, paths: list[Path]) -> list[str]:
    """Wavs of waves-32k that no filelist names (a feature step failed or the index is stale)."""
    listed = set()
    for path in paths:
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    mel = Path(line.split("|")[0])
                    listed.add((mel.parent.name, mel.name.removesuffix(".mel.pt")))
    wav_root = data_root / "waves-32k"
    return [f"{w}: not in any filelist (missing features? rerun the failed step, then preprocess_train.py)"
            for w in sorted(wav_root.glob("*/*.wav")) if (w.parent.name, w.stem) not in listed]


def audio_stats(wav: np.ndarray, sr: int) -> tuple[float, float]:
    """(silence ratio: 10 ms frames with RMS below -60 dBFS, clipping ratio: samples in runs of >= 3 at the peak)."""
    hop = sr // 100
    n = len(wav) // hop
    if n == 0:
        return 1.0, 0.0
    rms = np.sqrt(np.mean(wav[: n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1))
    silence = float(np.mean(rms < SILENCE_RMS))
    peak = float(np.abs(wav).max())
    if peak <= 0:
        return silence, 0.0
    at_peak = np.abs(wav) >= 0.999 * peak
    # a clipped region is a run of >= 3 samples at the peak; single peak samples are normal
    run = at_peak[2:] & at_peak[1:-1] & at_peak[:-2]
    clipped = np.zeros_like(at_peak)
    for k in range(3):
        clipped[k: len(run) + k] |= run
    return silence, float(np.mean(clipped))


def singer_audio_stats(data_root: Path) -> dict:
    out = {}
    for singer_dir in sorted(p for p in (data_root / "waves-32k").glob("*") if p.is_dir()):
        sil, clip, total = 0.0, 0.0, 0
        for wav_path in sorted(singer_dir.glob("*.wav")):
            try:
                wav, sr = read_audio(wav_path)
            except AudioError:
                continue
            s, c = audio_stats(wav, sr)
            sil, clip, total = sil + s * len(wav), clip + c * len(wav), total + len(wav)
        if total:
            out[singer_dir.name] = {"silence_ratio": round(sil / total, 4), "clipping_ratio": round(clip / total, 5)}
    return out


def song_f0_range(songs: Path, method: str) -> tuple[float, float] | None:
    """5th and 95th percentile of the voiced F0 of ``songs`` (a folder, searched recursively, or one file); songs
    that cannot be read are named on stderr."""
    from pitch.f0 import compute_f0

    voiced = []
    for path in ([songs] if songs.is_file() else list_audio(songs)):
        try:
            f0 = compute_f0(load_audio(path, 16000), 16000, method=method)
        except AudioError as exc:
            print(f"WARNING --songs: {exc}; left out of the range", file=sys.stderr)
            continue
        voiced.append(f0[f0 > 0])
    v = np.concatenate(voiced) if voiced else np.zeros(0)
    return (float(np.percentile(v, 5)), float(np.percentile(v, 95))) if v.size else None


def warnings_for(summary: dict, songs_range: tuple[float, float] | None) -> list[str]:
    out = []
    for singer, s in summary.items():
        if s["minutes"] < MIN_MINUTES:
            out.append(f"{singer}: only {s['minutes']} min of singing; {MIN_MINUTES:g}+ min gives a usable voice")
        if s.get("clipping_ratio", 0) > MAX_CLIPPING:
            out.append(f"{singer}: {s['clipping_ratio']:.2%} of samples are clipped; the model learns the distortion")
        if s.get("silence_ratio", 0) > MAX_SILENCE:
            out.append(f"{singer}: {s['silence_ratio']:.0%} of the audio is silence; trim it")
        if s.get("suspected_octave_frames") or s.get("f0_frames_over_900hz"):
            files = list(s.get("octave_suspect_files", {}))
            shown = ", ".join(files[:MAX_LISTED_FILES]) + (f" and {len(files) - MAX_LISTED_FILES} more"
                                                           if len(files) > MAX_LISTED_FILES else "")
            out.append(f"{singer}: {s['suspected_octave_frames']} F0 frames look like octave errors (over 600 cents "
                       f"from their +-150 ms median) and {s['f0_frames_over_900hz']} are at {STRAY_HZ:g} Hz or above,"
                       f" in {len(files)} files: {shown}; check them, or rerun preprocess_f0.py with --f0_fix octave "
                       "(or another --method)")
        if songs_range and s["f0_p5_hz"] and s["f0_p95_hz"]:
            low = 12 * np.log2(s["f0_p5_hz"] / songs_range[0])
            high = 12 * np.log2(songs_range[1] / s["f0_p95_hz"])
            if high > 2:
                out.append(f"{singer}: the songs reach {songs_range[1]:.0f} Hz, {high:.1f} semitones above the "
                           f"singer's range (95th pct {s['f0_p95_hz']} Hz); consider --shift {-int(np.ceil(high))}")
            if low > 2:
                out.append(f"{singer}: the songs go down to {songs_range[0]:.0f} Hz, {low:.1f} semitones below the "
                           f"singer's range (5th pct {s['f0_p5_hz']} Hz); consider --shift {int(np.ceil(low))}")
    return out


def plot_histograms(stats: dict, folder: Path) -> list[Path]:
    from common.plots import save_histogram_png

    written = []
    bins = np.geomspace(50, 1100, 61)
    for singer, s in sorted(stats.items()):
        f0 = np.concatenate(s["f0"]) if s["f0"] else np.zeros(0)
        path = folder / f"{singer}.f0.png"
        save_histogram_png(f0, bins, path, "F0 (Hz), voiced frames", "frames", f"{singer}: F0 range", log_x=True)
        written.append(path)
    return written


def report(stats: dict, frame_rate: float) -> dict:
    out = {}
    for singer, s in sorted(stats.items()):
        f0 = np.concatenate(s["f0"]) if s["f0"] else np.zeros(0)
        out[singer] = {
            "clips": s["clips"],
            "minutes": round(s["frames"] / frame_rate / 60, 2),
            "voiced_ratio": round(s["voiced"] / max(1, s["frames"]), 3),
            "f0_p5_hz": round(float(np.percentile(f0, 5)), 1) if f0.size else None,
            "f0_p95_hz": round(float(np.percentile(f0, 95)), 1) if f0.size else None,
            "suspected_octave_frames": s.get("octave", 0),
            "f0_frames_over_900hz": s.get("stray", 0),
            "octave_suspect_files": dict(sorted(s.get("octave_files", {}).items(),
                                                key=lambda kv: -sum(kv[1].values()))),
        }
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Check the feature set and the training index.")
    ap.add_argument("--data", default="./data_gvc")
    ap.add_argument("--files", default="./files", help="folder with train.txt and valid.txt")
    ap.add_argument("-c", "--config", default=None)
    ap.add_argument("--json", default=None, help="also write the report as JSON here")
    ap.add_argument("--plots", default=None, help="folder for the F0 histograms (default <data>/check)")
    ap.add_argument("--songs", default=None, help="source songs you will convert: warn if they leave a singer's range")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.songs and not Path(args.songs).exists():
        print(f"error: {args.songs}: --songs folder or file not found", file=sys.stderr)
        return 2
    lists = [Path(args.files) / "train.txt", Path(args.files) / "valid.txt"]
    problems, stats = check_filelists(lists, cfg.grad.n_mels, cfg.grad.n_vecs, allow_empty=(lists[1],))
    problems += unindexed(Path(args.data), lists)
    summary = report(stats, cfg.data.sampling_rate / cfg.data.hop_length)
    for singer, a in singer_audio_stats(Path(args.data)).items():
        if singer in summary:
            summary[singer].update(a)
    for singer, s in summary.items():
        print(f"{singer}: {s['clips']} clips, {s['minutes']} min, voiced {s['voiced_ratio']:.0%}, "
              f"F0 {s['f0_p5_hz']}-{s['f0_p95_hz']} Hz, silence {s.get('silence_ratio', 0):.0%}, "
              f"clipping {s.get('clipping_ratio', 0):.2%}")
    if stats:
        plots = plot_histograms(stats, Path(args.plots) if args.plots else Path(args.data) / "check")
        print(f"F0 histograms: {', '.join(str(p) for p in plots)}")
    songs_range = song_f0_range(Path(args.songs), cfg.data.f0_method) if args.songs else None
    warns = warnings_for(summary, songs_range)
    if lists[1].is_file() and not lists[1].read_text(encoding="utf-8").strip():
        warns.append(f"{lists[1]}: no validation items (too few clips per singer to hold one out under "
                     "preprocess_train.py's --valid_share): training runs without validation")
    for w in warns:
        print(f"WARNING {w}")
    if args.json:  # atomic, its folder made if needed
        write_text(args.json, json.dumps({"singers": summary, "problems": problems, "warnings": warns}, indent=2))
    for p in problems:
        print(f"PROBLEM {p}", file=sys.stderr)
    print(f"{len(problems)} problems" if problems else "feature set OK")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

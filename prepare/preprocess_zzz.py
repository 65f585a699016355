"""Step 9: check the whole feature set before training; prints a report, exit status 1 on any problem.

    python prepare/preprocess_zzz.py

Checks every item of ``files/train.txt`` and ``files/valid.txt`` (all four files present and readable, dims,
finite values, mel / units / F0 lengths consistent) and that every wav of ``data_gvc/waves-32k`` made it into the
index. Then a per-singer report: clips, minutes, voiced ratio and the F0 range (5th-95th percentile).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from common.config import load_config
from common.features import FeatureError, check_item, read_filelist, read_pit


def check_filelists(paths: list[Path], n_mels: int, dim: int) -> tuple[list[str], dict]:
    problems: list[str] = []
    stats: dict = defaultdict(lambda: {"clips": 0, "frames": 0, "voiced": 0, "f0": []})
    for path in paths:
        try:
            items = read_filelist(path)
        except FeatureError as exc:
            problems.append(str(exc))
            continue
        if not items:
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
        }
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Check the feature set and the training index.")
    ap.add_argument("--data", default="./data_gvc")
    ap.add_argument("--files", default="./files", help="folder with train.txt and valid.txt")
    ap.add_argument("-c", "--config", default=None)
    ap.add_argument("--json", default=None, help="also write the report as JSON here")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    lists = [Path(args.files) / "train.txt", Path(args.files) / "valid.txt"]
    problems, stats = check_filelists(lists, cfg.grad.n_mels, cfg.grad.n_vecs)
    problems += unindexed(Path(args.data), lists)
    summary = report(stats, cfg.data.sampling_rate / cfg.data.hop_length)
    for singer, s in summary.items():
        print(f"{singer}: {s['clips']} clips, {s['minutes']} min, voiced {s['voiced_ratio']:.0%}, "
              f"F0 {s['f0_p5_hz']}-{s['f0_p95_hz']} Hz")
    if args.json:
        Path(args.json).write_text(json.dumps({"singers": summary, "problems": problems}, indent=2))
    for p in problems:
        print(f"PROBLEM {p}", file=sys.stderr)
    print(f"{len(problems)} problems" if problems else "feature set OK")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

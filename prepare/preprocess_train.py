"""Step 8: the training index ``files/train.txt`` and ``files/valid.txt`` (lines ``mel|vec|pit|spk``).

    python prepare/preprocess_train.py

Every 32 kHz wav with all four feature files is listed; the rest are named and left out. The split is seeded (the
original shuffled without a seed), paths are relative to where you run the command (as the original's
``./data_gvc/...``) unless ``--data`` is absolute. Validation takes ``--valid`` items (10, as the original) but
never more than ``--valid_share`` (20 %) of a singer's clips, with a warning when that holds fewer back: the
original held out 10 of 20 clips, and 4 of 5.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from collections import Counter
from pathlib import Path

from common.features import item_for
from common.io import DiskFullError, write_text


def collect(data_root: Path) -> tuple[list[str], list[str]]:
    """(filelist lines of complete items, names of missing files); files directly in waves-32k (no singer folder)
    and names with the index's ``|`` separator are named on stderr and left out."""
    lines, missing = [], []
    wav_root = data_root / "waves-32k"
    for wav in sorted(wav_root.glob("*.wav")):
        print(f"{wav}: not in a singer folder (data_raw/<singer>/*.wav), item left out", file=sys.stderr)
    for wav in sorted(wav_root.glob("*/*.wav")):
        if "|" in str(wav):
            print(f"{wav}: '|' separates the index's fields; rename the file (and its singer folder), item left out",
                  file=sys.stderr)
            continue
        item = item_for(data_root, wav.parent.name, wav.stem)
        absent = [str(p) for p in (item.mel, item.vec, item.pit, item.spk) if not p.is_file()]
        if absent:
            missing.extend(absent)
        else:
            lines.append(item.line())
    return lines, missing


def singer_of(line: str) -> str:
    """The singer folder of a filelist line (its mel path's parent)."""
    return Path(line.split("|", 1)[0]).parent.name


def split_valid(lines: list[str], n_valid: int, share: float) -> tuple[list[str], list[str], str | None]:
    """(valid, train, warning): the first ``n_valid`` of the (shuffled) ``lines``, skipping items of a singer who
    already gave ``floor(share x clips)``; at least one training item is always kept. The warning (None when the
    rule held nothing back) says what was done per singer."""
    clips = Counter(singer_of(x) for x in lines)
    cap = {s: math.floor(share * n + 1e-9) for s, n in clips.items()}
    requested, n_valid = n_valid, min(n_valid, max(0, len(lines) - 1))
    taken: Counter = Counter()
    valid, train = [], []
    for line in lines:
        s = singer_of(line)
        if len(valid) < n_valid and taken[s] < cap[s]:
            valid.append(line)
            taken[s] += 1
        else:
            train.append(line)
    warning = None
    if len(valid) < requested:
        per_singer = ", ".join(f"{s} {taken[s]} of {n}" for s, n in sorted(clips.items()))
        warning = (f"warning: {len(valid)} validation items instead of {requested}: at most {share:.0%} of a "
                   f"singer's clips are held out for validation ({per_singer}); --valid_share changes the limit")
    return sorted(valid), train, warning


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Write files/train.txt and files/valid.txt.")
    ap.add_argument("--data", default="./data_gvc", help="feature root (default ./data_gvc)")
    ap.add_argument("--out", default="./files", help="output folder (default ./files)")
    ap.add_argument("--valid", type=int, default=10, help="items held out for validation (the original: 10)")
    ap.add_argument("--valid_share", type=float, default=0.2,
                    help="at most this share of a singer's clips is held out for validation (default 0.2)")
    ap.add_argument("--seed", type=int, default=37)
    args = ap.parse_args(argv)
    data_root = Path(args.data)
    if not 0 <= args.valid_share < 1:
        print(f"--valid_share {args.valid_share}: must be >= 0 and < 1", file=sys.stderr)
        return 2
    if not (data_root / "waves-32k").is_dir():
        print(f"{data_root / 'waves-32k'}: not found (run prepare/preprocess_a.py first)", file=sys.stderr)
        return 2
    lines, missing = collect(data_root)
    for path in missing:
        print(f"missing feature file, item left out: {path}", file=sys.stderr)
    if not lines:
        print(f"{data_root}: no complete items (every item lacks a feature file)", file=sys.stderr)
        return 2
    random.Random(args.seed).shuffle(lines)
    valid, train, warning = split_valid(lines, args.valid, args.valid_share)
    if warning:
        print(warning, file=sys.stderr)
    out = Path(args.out)
    try:
        write_text(out / "train.txt", "".join(f"{x}\n" for x in train))
        write_text(out / "valid.txt", "".join(f"{x}\n" for x in valid))
    except DiskFullError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{out / 'train.txt'}: {len(train)} items; {out / 'valid.txt'}: {len(valid)} items; "
          f"{len(missing)} missing feature files")
    return 0


if __name__ == "__main__":
    sys.exit(main())

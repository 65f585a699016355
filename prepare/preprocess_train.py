"""Step 8: the training index ``files/train.txt`` and ``files/valid.txt`` (lines ``mel|vec|pit|spk``).

    python prepare/preprocess_train.py

Every 32 kHz wav with all four feature files is listed; the rest are named and left out. The split is seeded (the
original shuffled without a seed), paths are relative to where you run the command (as the original's
``./data_gvc/...``) unless ``--data`` is absolute.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

from common.features import item_for
from common.io import write_text


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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Write files/train.txt and files/valid.txt.")
    ap.add_argument("--data", default="./data_gvc", help="feature root (default ./data_gvc)")
    ap.add_argument("--out", default="./files", help="output folder (default ./files)")
    ap.add_argument("--valid", type=int, default=10, help="items held out for validation (the original: 10)")
    ap.add_argument("--seed", type=int, default=37)
    args = ap.parse_args(argv)
    data_root = Path(args.data)
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
    # keep at least one training item: with few files the validation set shrinks, never the training set to zero
    n_valid = min(args.valid, max(0, len(lines) - 1))
    valid, train = sorted(lines[:n_valid]), lines[n_valid:]
    out = Path(args.out)
    write_text(out / "train.txt", "".join(f"{x}\n" for x in train))
    write_text(out / "valid.txt", "".join(f"{x}\n" for x in valid))
    print(f"{out / 'train.txt'}: {len(train)} items; {out / 'valid.txt'}: {len(valid)} items; "
          f"{len(missing)} missing feature files")
    return 0


if __name__ == "__main__":
    sys.exit(main())

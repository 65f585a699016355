"""Extract F0 from one file into the editable pitch CSV (the original's ``pitch/inference.py``).

    python pitch/inference.py -w test.wav -p test.csv [--method praat|crepe|crepe-tiny|harvest|fcpe] [--device cpu]
                              [--f0_fix none|octave]

The audio is read at 16 kHz (any format soundfile reads, any rate and channel count). The CSV keeps 0.1 Hz, one
row per 10 ms frame (see pitch.csv_io); edit it and pass it to ``gvc_inference.py --pit``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from common.audio import AudioError, load_audio
from common.config import ConfigError, load_config
from common.io import DiskFullError, check_output_path
from common.runtime import default_device, tune_allocator
from pitch.csv_io import save_csv_pitch
from pitch.f0 import F0_FIXES, METHODS, SAMPLE_RATE, apply_f0_fix, compute_f0

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="F0 of a wave file -> pitch CSV (10 ms rows, Hz, 0 = unvoiced)")
    parser.add_argument("-w", "--wav", dest="wav", required=True, help="input audio file")
    parser.add_argument("-p", "--pit", dest="pit", required=True, help="output CSV (editable, e.g. in a spreadsheet)")
    parser.add_argument("--method", choices=METHODS, default=None,
                        help="F0 method (default: data.f0_method of configs/base.yaml, i.e. praat)")
    parser.add_argument("--device", default=None,
                        help="torch device for the crepe and fcpe methods (default: cuda if present)")
    parser.add_argument("--f0_fix", choices=F0_FIXES, default="none",
                        help="octave: fold back isolated octave jumps shorter than 150 ms (default: none, as the "
                             "original)")
    parser.add_argument("-c", "--config", default=None, help="config overlay to read data.f0_method from")
    return parser


def main(argv: list[str] | None = None) -> None:
    tune_allocator()
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        method = args.method or load_config(args.config).data.f0_method
        check_output_path(args.pit)
    except (ConfigError, IsADirectoryError) as exc:
        sys.exit(f"error: {exc}")
    if method not in METHODS:
        sys.exit(f"error: data.f0_method {method!r} is not one of {', '.join(METHODS)}")
    device = default_device(args.device)
    try:
        wav = load_audio(args.wav, sr=SAMPLE_RATE)
    except AudioError as exc:
        sys.exit(f"error: {exc}")
    f0 = apply_f0_fix(compute_f0(wav, SAMPLE_RATE, method=method, device=device), args.f0_fix)
    try:
        save_csv_pitch(args.pit, f0)
    except DiskFullError as exc:
        sys.exit(f"error: {exc}")
    voiced = int((f0 > 0).sum())
    print(f"{args.pit}: {len(f0)} frames ({voiced} voiced), method {method}")


if __name__ == "__main__":
    main()

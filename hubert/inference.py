"""Soft units of one audio file: ``python hubert/inference.py -w test.wav -v test.vec.npy``.

Reads any format / rate / channel count (resampled to 16 kHz) and writes ``float32 [N // 320, 256]`` (50 frames/s)
atomically with ``np.save`` to exactly the given path.
"""

from __future__ import annotations

import argparse
import logging
import sys

from common.audio import MIN_FEATURE_SECONDS, AudioError, load_audio
from common.checkpoint import CheckpointError, Pretrained, require_pretrained
from common.io import DiskFullError, check_output_path, save_npy
from common.runtime import default_device, tune_allocator
from hubert.model import DEFAULT_CHECKPOINT, HOP, SAMPLE_RATE, compute_units, load_hubert

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="HuBERT-soft units (50 frames/s, 256-d) of one audio file")
    parser.add_argument("-w", "--wav", required=True, help="input audio (any format and sample rate)")
    parser.add_argument("-v", "--vec", required=True, help="output .vec.npy (float32 [frames, 256])")
    parser.add_argument("--model", default=DEFAULT_CHECKPOINT, help="HuBERT-soft checkpoint (default %(default)s)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    return parser


def main(argv: list[str] | None = None) -> None:
    tune_allocator()
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    device = default_device(args.device)
    try:
        check_output_path(args.vec)
        wav = load_audio(args.wav, SAMPLE_RATE, min_seconds=MIN_FEATURE_SECONDS)
        require_pretrained([Pretrained(args.model, "hubert", "--model")])
        model = load_hubert(args.model, device=device)
    except (CheckpointError, AudioError, IsADirectoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    units = compute_units(model, wav, device=device)
    try:
        save_npy(args.vec, units)
    except DiskFullError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"{args.vec}: units {units.shape[0]} x {units.shape[1]} ({units.shape[0] / (SAMPLE_RATE / HOP):.2f} s)")


if __name__ == "__main__":
    main()

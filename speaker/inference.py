"""Speaker embedding of one audio file.

    python speaker/inference.py -w song.wav -s song.spk.npy [--backend lstm|resemblyzer] [--checkpoint PATH]

Reads any audio soundfile reads (any rate, any channels; resampled to 16 kHz), writes float32 ``[256]``. The
output folder is tagged with the backend (``backend.json``) unless a tag already governs it; a folder tagged with
the other backend is refused (exit 2).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from common.audio import AudioError, load_audio
from common.checkpoint import CheckpointError
from common.config import ConfigError, load_config
from common.io import save_npy
from common.runtime import default_device, tune_allocator
from speaker.backends import (
    SAMPLE_RATE,
    add_encoder_args,
    check_backend,
    find_backend_tag,
    load_speaker_backend,
    write_backend_tag,
)

log = logging.getLogger(__name__)


def main(argv=None) -> int:
    tune_allocator()
    ap = argparse.ArgumentParser(description="Compute the 256-d speaker embedding of one audio file.")
    ap.add_argument("-w", "--wav", required=True, help="input audio file")
    ap.add_argument("-s", "--spk", required=True, help="output .spk.npy")
    add_encoder_args(ap)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    device = default_device(args.device)
    out = Path(args.spk)
    try:
        name = args.backend or load_config(args.config).data.speaker_backend
        check_backend(out, name, f"the embeddings in {out.parent}")
        wav = load_audio(args.wav, SAMPLE_RATE)
        backend = load_speaker_backend(name, args.checkpoint, device)
    except CheckpointError as exc:
        hint = "; or use --backend resemblyzer, which needs no download" if name == "lstm" else ""
        print(f"error: {exc}{hint}", file=sys.stderr)
        return 2
    except (ConfigError, ValueError, OSError) as exc:  # AudioError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        emb = backend.embed(wav)
    except AudioError as exc:
        print(f"error: {args.wav}: {exc}", file=sys.stderr)
        return 1
    save_npy(out, emb)
    if find_backend_tag(out) is None:
        write_backend_tag(out.parent, name)
    print(f"{out}: speaker embedding ({name}), shape {emb.shape}, norm {float(np.linalg.norm(emb)):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training F0 features: ``<wav>/<singer>/<name>.wav`` -> ``<pit>/<singer>/<name>.pit.npy`` (the original's command).

    python prepare/preprocess_f0.py -w data_gvc/waves-16k/ -p data_gvc/pitch [-t 0] [--method praat] [--f0_fix none]

Each ``.pit.npy`` is float64 ``[T]``, Hz per 10 ms frame rounded to 0.1 Hz, 0 = unvoiced
(docs/conventions.md#pitch-files).
Resumable (existing outputs are skipped), atomic writes, one process per ``-t`` worker; failed files are listed at
the end and the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from common.audio import MIN_FEATURE_SECONDS, list_audio, load_audio
from common.config import ConfigError, load_config
from common.filewalk import Job, finish, mirror_path, require_folder, run_jobs
from common.io import save_npy
from pitch.f0 import F0_FIXES, METHODS, SAMPLE_RATE, apply_f0_fix, compute_f0, round_f0

log = logging.getLogger(__name__)

SUFFIX = ".pit.npy"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="F0 features (.pit.npy) for every 16 kHz wave file of a folder")
    parser.add_argument("-w", "--wav", dest="wav", required=True, help="input folder (waves-16k/<singer>/*.wav)")
    parser.add_argument("-p", "--pit", dest="pit", required=True, help="output folder")
    parser.add_argument("-t", "--thread_count", dest="thread_count", type=int, default=0,
                        help="worker processes; 0 = all CPU cores")
    parser.add_argument("--method", choices=METHODS, default=None,
                        help="F0 method (default: data.f0_method of configs/base.yaml, i.e. praat)")
    parser.add_argument("--device", default="cpu", help="torch device for the crepe and fcpe methods")
    parser.add_argument("--f0_fix", choices=F0_FIXES, default="none",
                        help="octave: fold back isolated octave jumps shorter than 150 ms (default: none, as the "
                             "original)")
    parser.add_argument("-c", "--config", default=None, help="config overlay to read data.f0_method from")
    return parser


def make_jobs(wav_root: Path, pit_root: Path) -> list[Job]:
    """One job per ``.wav`` under ``wav_root`` (any depth), output mirrored under ``pit_root``."""
    return [Job(src, [mirror_path(src, wav_root, pit_root, SUFFIX)]) for src in list_audio(wav_root, (".wav",))]


def _init(method: str, device: str, f0_fix: str = "none") -> dict:
    return {"method": method, "device": device, "f0_fix": f0_fix}


def _work(job: Job, state: dict) -> None:
    wav = load_audio(job.src, sr=SAMPLE_RATE, min_seconds=MIN_FEATURE_SECONDS)
    f0 = apply_f0_fix(compute_f0(wav, SAMPLE_RATE, method=state["method"], device=state["device"]),
                      state.get("f0_fix"))
    save_npy(job.outputs[0], round_f0(f0))


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        method = args.method or load_config(args.config).data.f0_method
    except ConfigError as exc:
        sys.exit(f"error: {exc}")
    if method not in METHODS:
        sys.exit(f"error: data.f0_method {method!r} is not one of {', '.join(METHODS)}")
    wav_root, pit_root = require_folder(args.wav), Path(args.pit)
    jobs = make_jobs(wav_root, pit_root)
    if not jobs:
        log.warning("%s: no .wav files found", wav_root)
    summary = run_jobs(jobs, _work, workers=args.thread_count, desc=f"f0 ({method})", init=_init,
                       init_args=(method, args.device, args.f0_fix))
    code = finish(summary, "preprocess_f0")
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()

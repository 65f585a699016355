"""HuBERT-soft units for a corpus: ``python prepare/preprocess_hubert.py -w data_gvc/waves-16k/ -v data_gvc/hubert``.

For every ``<wav>/<singer>/<name>.wav`` writes ``<vec>/<singer>/<name>.vec.npy`` (float32 ``[N // 320, 256]``,
50 frames/s) with ``hubert.model.compute_units``, the function inference uses too. Resumable (existing outputs
are skipped), ``-t`` worker processes (0 = all cores), a summary of failed files; exit status 1 if any failed,
2 for a missing checkpoint or input folder.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from common.audio import MIN_FEATURE_SECONDS, load_audio
from common.checkpoint import CheckpointError, Pretrained, require_pretrained
from common.filewalk import Job, finish, mirror_path, require_folder, run_jobs
from common.io import save_npy
from common.runtime import default_device
from hubert.model import DEFAULT_CHECKPOINT, SAMPLE_RATE, HubertSoft, compute_units, load_hubert

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="HuBERT-soft units (.vec.npy) for every <singer>/<name>.wav")
    parser.add_argument("-w", "--wav", required=True, help="input folder of 16 kHz waves, one sub-folder per singer")
    parser.add_argument("-v", "--vec", required=True, help="output folder (mirrors the input's sub-folders)")
    parser.add_argument("-t", "--thread_count", "--workers", dest="thread_count", type=int, default=1,
                        help="worker processes, 0 = all cores (default 1)")
    parser.add_argument("--model", default=DEFAULT_CHECKPOINT, help="HuBERT-soft checkpoint (default %(default)s)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    return parser


def find_jobs(wav_root: Path, vec_root: Path) -> list[Job]:
    """One job per ``<wav_root>/<singer>/<name>.wav``, output ``<vec_root>/<singer>/<name>.vec.npy``."""
    return [Job(src, [mirror_path(src, wav_root, vec_root, ".vec.npy")]) for src in sorted(wav_root.glob("*/*.wav"))]


def init_worker(model_path: str, device: str) -> HubertSoft:
    return load_hubert(model_path, device=device)


def process(job: Job, model: HubertSoft) -> None:
    wav = load_audio(job.src, SAMPLE_RATE, min_seconds=MIN_FEATURE_SECONDS)
    save_npy(job.outputs[0], compute_units(model, wav))


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    wav_root, vec_root = Path(args.wav), Path(args.vec)
    device = default_device(args.device)
    try:  # a missing or unusable checkpoint is one line here, before any file (workers load their own copy)
        require_pretrained([Pretrained(args.model, "hubert", "--model")])
        model = load_hubert(args.model, device=device)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    require_folder(wav_root)
    jobs = find_jobs(wav_root, vec_root)
    if not jobs:
        log.warning("%s: no <singer>/<name>.wav files found", wav_root)
    summary = run_jobs(jobs, process, workers=args.thread_count, desc="hubert", init=init_worker,
                       init_args=(str(args.model), device), ready=model)
    code = finish(summary, "hubert units")
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()

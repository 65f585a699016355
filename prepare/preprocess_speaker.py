"""Step 5: one speaker embedding per 16 kHz file.

    python prepare/preprocess_speaker.py data_gvc/waves-16k/ data_gvc/speaker [-t 0] [--backend lstm]

Writes ``<out>/<singer>/<name>.spk.npy``: float32 ``[256]`` (speaker/backends.py), and ``<out>/backend.json``
naming the backend. ``lstm`` (the original's encoder) needs ``speaker_pretrain/best_model.pth.tar``;
``resemblyzer`` works offline. A folder already tagged with the other backend is refused (exit 2), as is a missing
checkpoint; a file that fails (unreadable, silent) is listed in the summary and the exit status is 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.audio import load_audio
from common.checkpoint import CheckpointError, Pretrained, require_pretrained
from common.config import ConfigError, load_config
from common.filewalk import Job, finish, mirror_path, require_folder, resolve_workers, run_jobs, setup_cli_logging
from common.io import save_npy
from common.runtime import default_device
from speaker.backends import SAMPLE_RATE, add_encoder_args, check_backend, load_speaker_backend, write_backend_tag
from speaker.lstm import DEFAULT_CHECKPOINT as LSTM_FILE


def embed_file(job: Job, backend) -> None:
    """Worker: read ``job.src`` at 16 kHz, embed it, write ``job.outputs[0]`` (float32 [256])."""
    save_npy(job.outputs[0], backend.embed(load_audio(job.src, SAMPLE_RATE)))


def _keep(backend):
    return backend


def list_jobs(wav_root: Path, out_root: Path) -> list[Job]:
    """``<wav_root>/<singer>/<name>.wav`` -> ``<out_root>/<singer>/<name>.spk.npy`` (top-level wavs too)."""
    return [Job(src, [mirror_path(src, wav_root, out_root, ".spk.npy")]) for src in sorted(wav_root.rglob("*.wav"))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Compute a 256-d speaker embedding for each 16 kHz wav.")
    ap.add_argument("dataset_path", help="input folder (data_gvc/waves-16k)")
    ap.add_argument("output_path", help="output folder (data_gvc/speaker)")
    ap.add_argument("-t", "--thread_count", type=int, default=1, help="worker processes (0 = all cores)")
    add_encoder_args(ap)
    args = ap.parse_args(argv)
    setup_cli_logging()
    device = default_device(args.device)
    wav_root, out_root = require_folder(args.dataset_path), Path(args.output_path)
    try:
        name = args.backend or load_config(args.config).data.speaker_backend
        check_backend(out_root, name, f"the embeddings in {out_root}")
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    jobs = list_jobs(wav_root, out_root)
    workers = resolve_workers(args.thread_count)
    # load once here, before any work, so a missing or bad checkpoint stops the command with one line
    try:
        if name == "lstm":
            require_pretrained([Pretrained(args.checkpoint or LSTM_FILE, "speaker", "--checkpoint",
                                           "--backend resemblyzer (no download)")])
        backend = load_speaker_backend(name, args.checkpoint, device)
    except (CheckpointError, ValueError, OSError) as exc:
        hint = "; or use --backend resemblyzer, which needs no download" if (
            name == "lstm" and "resemblyzer" not in str(exc)) else ""
        print(f"error: {exc}{hint}", file=sys.stderr)
        return 2
    out_root.mkdir(parents=True, exist_ok=True)
    write_backend_tag(out_root, name)
    if workers == 1:
        summary = run_jobs(jobs, embed_file, 1, desc=f"speaker ({name})", init=_keep, init_args=(backend,))
    else:
        del backend  # each worker process loads its own copy
        summary = run_jobs(jobs, embed_file, workers, desc=f"speaker ({name})", init=load_speaker_backend,
                           init_args=(name, args.checkpoint, device))
    return finish(summary, f"speaker ({name})")


if __name__ == "__main__":
    sys.exit(main())

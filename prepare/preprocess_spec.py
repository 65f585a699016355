"""Step 3: the training mel of every 32 kHz file.

    python prepare/preprocess_spec.py -w data_gvc/waves-32k/ -s data_gvc/mel

Writes ``<out>/<singer>/<name>.mel.pt``: torch float32 ``[100, T]`` with ``T = N // 320`` (common/mel.py, the one
mel function the vocoder and the metrics use too).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.config import ConfigError, load_config
from common.filewalk import Job, finish, mirror_path, require_folder, run_jobs, setup_cli_logging
from common.io import save_torch
from common.mel import mel_from_file


def mel_file(job: Job, data_cfg) -> None:
    mel = mel_from_file(job.src, data_cfg)
    save_torch(job.outputs[0], mel.float().contiguous())


def _load_data_cfg(config_path: str | None):
    return load_config(config_path).data


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Compute the log-mel of each 32 kHz wav.")
    ap.add_argument("-w", "--wav", required=True, help="input folder (data_gvc/waves-32k)")
    ap.add_argument("-s", "--spe", required=True, help="output folder (data_gvc/mel)")
    ap.add_argument("-t", "--thread_count", type=int, default=0, help="worker processes (0 = all cores)")
    ap.add_argument("-c", "--config", default=None, help="config overlay (mel settings come from data:)")
    args = ap.parse_args(argv)
    setup_cli_logging()
    wav_root = require_folder(args.wav)
    try:  # a bad -c is one line here, not a failure per file
        data_cfg = _load_data_cfg(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    wavs = sorted(wav_root.rglob("*.wav"))
    jobs = [Job(src, [mirror_path(src, wav_root, Path(args.spe), ".mel.pt")]) for src in wavs]
    summary = run_jobs(jobs, mel_file, args.thread_count, desc="mel", init=_load_data_cfg, init_args=(args.config,),
                       ready=data_cfg)
    return finish(summary, "mel")


if __name__ == "__main__":
    sys.exit(main())

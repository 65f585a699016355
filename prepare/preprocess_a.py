"""Step 1: resample every recording under ``data_raw/<singer>/`` to mono 16-bit WAV at one rate.

    python prepare/preprocess_a.py -w ./data_raw -o ./data_gvc/waves-16k -s 16000
    python prepare/preprocess_a.py -w ./data_raw -o ./data_gvc/waves-32k -s 32000

Any format soundfile reads (wav, flac, ogg, ...), any rate and channel count. Like the original, every file is
scaled to a peak of 0.6, however quiet. Silent files (peak below -80 dBFS), files under ``--min_seconds`` and
unreadable files are skipped and named in the summary.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from common.audio import AudioError, list_audio, load_audio, normalize_peak, to_int16, write_wav
from common.filewalk import Job, finish, mirror_path, require_folder, run_jobs, setup_cli_logging

SILENCE_PEAK = 1e-4  # -80 dBFS: nothing a speaker encoder or pitch tracker can use


def resample_file(job: Job, _state=None) -> None:
    if job.extra.get("same_name_as"):
        raise ValueError(f"{job.src}: same output name as {job.extra['same_name_as']}; rename one of them")
    sr, min_seconds = job.extra["sr"], job.extra["min_seconds"]
    wav = load_audio(job.src, sr, min_seconds=min_seconds)
    if float(np.abs(wav).max()) < SILENCE_PEAK:
        raise AudioError(f"{job.src}: silent (peak below -80 dBFS)")
    write_wav(job.outputs[0], to_int16(normalize_peak(wav, 0.6)), sr)


def build_jobs(wav_root: Path, out_root: Path, sr: int, min_seconds: float) -> list[Job]:
    jobs, owner = [], {}
    for src in list_audio(wav_root):
        out = mirror_path(src, wav_root, out_root, ".wav")
        extra = {"sr": sr, "min_seconds": min_seconds}
        if out in owner:  # x.flac and x.ogg would both become x.wav: keep the first, report the others
            extra["same_name_as"] = owner[out].name
            jobs.append(Job(src, [], extra))
            continue
        owner[out] = src
        jobs.append(Job(src, [out], extra))
    return jobs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Resample data_raw/<singer>/* to mono int16 WAV.")
    ap.add_argument("-w", "--wav", required=True, help="input folder (data_raw)")
    ap.add_argument("-o", "--out", required=True, help="output folder (data_gvc/waves-16k or waves-32k)")
    ap.add_argument("-s", "--sr", type=int, required=True, help="output sample rate (16000 or 32000)")
    ap.add_argument("-t", "--thread_count", type=int, default=0, help="worker processes (0 = all cores)")
    ap.add_argument("--min_seconds", type=float, default=0.3, help="shorter files are reported and skipped")
    args = ap.parse_args(argv)
    setup_cli_logging()
    wav_root = require_folder(args.wav)
    jobs = build_jobs(wav_root, Path(args.out), args.sr, args.min_seconds)
    summary = run_jobs(jobs, resample_file, args.thread_count, desc=f"resample {args.sr}")
    return finish(summary, f"resample to {args.sr} Hz")


if __name__ == "__main__":
    sys.exit(main())

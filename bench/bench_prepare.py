"""Benchmark the numbered preprocessing pipeline as a user runs it (each step a subprocess); prints JSON.

    python bench/bench_prepare.py                       # 20 files of 5 s made from the test corpus
    python bench/bench_prepare.py --data_raw data_raw   # your own recordings
    python bench/bench_prepare.py --threads 1           # -t 1 for every step

Reports wall time, files/s and real-time factor (seconds of compute per second of audio) per step and in total.
Without `hubert_pretrain/hubert-soft-0d54a1f4.pt` the HuBERT step runs on weights made by the test fill recipe
(same architecture and cost; timing only). The speaker step uses `--backend` (default resemblyzer, offline).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from common.runtime import tune_allocator

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "tests" / "fixtures" / "corpus"


def make_raw(out: Path, n_files: int, seconds: float) -> float:
    """``n_files`` songs of ``seconds`` cut from the corpus (tiled), spread over its singers; returns total seconds."""
    songs = sorted(CORPUS.glob("*/*.wav"))
    total = 0.0
    for i in range(n_files):
        src = songs[i % len(songs)]
        x, sr = sf.read(src, dtype="float32")
        n = int(seconds * sr)
        x = np.tile(x, int(np.ceil(n / len(x))))[:n]
        dst = out / src.parent.name / f"{i:03d}_{src.stem}.wav"
        dst.parent.mkdir(parents=True, exist_ok=True)
        sf.write(dst, x, sr)
        total += n / sr
    return total


def audio_seconds(folder: Path) -> float:
    return sum(sf.info(p).duration for p in folder.rglob("*") if p.suffix.lower() in (".wav", ".flac", ".ogg"))


def recipe_hubert(path: Path) -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    from golden import write_official_checkpoint

    return write_official_checkpoint("hubert_soft", path)


def main(argv=None) -> None:
    tune_allocator()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data_raw", default=None, help="folder of <singer>/*.wav (default: made from the corpus)")
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=0, help="-t of every step (0 = all cores)")
    ap.add_argument("--backend", default="resemblyzer")
    ap.add_argument("--hubert_model", default=str(REPO / "hubert_pretrain" / "hubert-soft-0d54a1f4.pt"))
    ap.add_argument("--work", default=None, help="work folder (default: a temporary one)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        raw = Path(args.data_raw) if args.data_raw else work / "data_raw"
        if not args.data_raw:
            make_raw(raw, args.files, args.seconds)
        seconds = audio_seconds(raw)
        n_files = len(list(raw.rglob("*.wav")))
        if not n_files or seconds <= 0:
            ap.error(f"{raw}: no <singer>/*.wav audio to time")
        if (work / "data_gvc").exists():  # the steps are resumable: a second run would time "already done"
            ap.error(f"{work / 'data_gvc'} exists; give an empty --work folder")
        hubert = Path(args.hubert_model)
        hubert_note = "official"
        if not hubert.is_file():
            hubert = recipe_hubert(work / "hubert_recipe.pt")
            hubert_note = "recipe weights (timing only)"
        d = work / "data_gvc"
        t = str(args.threads)
        py = sys.executable
        steps = [
            ("resample_16k", [py, "prepare/preprocess_a.py", "-w", raw, "-o", d / "waves-16k", "-s", "16000", "-t", t]),
            ("resample_32k", [py, "prepare/preprocess_a.py", "-w", raw, "-o", d / "waves-32k", "-s", "32000", "-t", t]),
            ("f0", [py, "prepare/preprocess_f0.py", "-w", d / "waves-16k", "-p", d / "pitch", "-t", t]),
            ("mel", [py, "prepare/preprocess_spec.py", "-w", d / "waves-32k", "-s", d / "mel", "-t", t]),
            ("hubert", [py, "prepare/preprocess_hubert.py", "-w", d / "waves-16k", "-v", d / "hubert", "-t", t,
                        "--model", hubert]),
            ("speaker", [py, "prepare/preprocess_speaker.py", d / "waves-16k", d / "speaker", "-t", t,
                         "--backend", args.backend]),
            ("speaker_ave", [py, "prepare/preprocess_speaker_ave.py", d / "speaker", d / "singer"]),
            ("train_index", [py, "prepare/preprocess_train.py", "--data", d, "--out", work / "files"]),
            ("check", [py, "prepare/preprocess_zzz.py", "--data", d, "--files", work / "files"]),
        ]
        results = {}
        for name, cmd in steps:
            t0 = time.perf_counter()
            res = subprocess.run([str(c) for c in cmd], cwd=REPO, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            results[name] = {"wall_s": round(wall, 3), "files_per_s": round(n_files / wall, 2),
                             "rtf": round(wall / seconds, 4), "rc": res.returncode}
            if res.returncode != 0:
                results[name]["stderr_tail"] = res.stderr[-500:]
        total = sum(r["wall_s"] for r in results.values())
        report = {
            "bench": "prepare", "files": n_files, "audio_seconds": round(seconds, 2), "threads": args.threads,
            "speaker_backend": args.backend, "hubert_weights": hubert_note, "machine": platform.processor() or
            platform.machine(), "steps": results,
            "total": {"wall_s": round(total, 2), "rtf": round(total / seconds, 4)},
            "original_reference": {"rtf": 0.55, "note": "the original's six scripts, same machine, 20 x 5 s"},
        }
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

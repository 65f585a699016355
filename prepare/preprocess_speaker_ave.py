"""Step 6: one speaker vector per singer, the mean of the singer's per-file embeddings.

    python prepare/preprocess_speaker_ave.py data_gvc/speaker/ data_gvc/singer [--replace_close 0.85] [--pitch DIR]

Reads ``<in>/<singer>/*.spk.npy`` (float32 ``[256]``) and writes ``<out>/<singer>.spk.npy``: their float32 mean
(not re-normalised), plus ``<out>/backend.json`` copied from the input's tag. Beside each singer vector it also
writes ``<out>/<singer>.f0.json``, the singer's F0 statistics (5th / 50th / 95th percentile of the voiced frames of
``<pitch>/<singer>/*.pit.npy``, a semitone histogram; ``pitch.key.f0_stats``) that ``gvc_inference.py --shift auto``
uses; ``--pitch`` defaults to the ``pitch`` folder beside the input (``data_gvc/pitch``, step 2's output). A singer
without pitch files gets a warning and no statistics; an unreadable pitch file fails the singer. Input folders tagged
with different backends, or an output folder tagged with another backend, are refused (exit 2). A singer with an
unreadable or malformed file fails as a whole (listed in the summary, exit 1); the other singers are still written.

Deliberate difference from the original: the original script also OVERWRITES every per-file ``.spk.npy`` whose
cosine similarity to the singer mean exceeds 0.85 with the mean itself, so the training speaker vectors are
partly replaced (reference/conventions.md §2, pitfall 8). Here the per-file vectors are left untouched unless
``--replace_close 0.85`` is given, which reproduces the original exactly (``cos > threshold``, torch's
``cosine_similarity``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from common.features import read_pit
from common.filewalk import Job, finish, require_folder, run_jobs, setup_cli_logging
from common.io import save_npy
from pitch.key import f0_stats, stats_path, write_singer_stats
from speaker.backends import EMBED_DIM, TAG_FILE, check_backend, read_backend_tag, read_speaker_file, write_backend_tag

log = logging.getLogger(__name__)

SUFFIX = ".spk.npy"
PIT_SUFFIX = ".pit.npy"
ORIGINAL_SUFFIX = ".spk.orig.npy"  # a per-file vector as the encoder made it, kept when --replace_close rewrites it


def original_of(path: Path) -> Path:
    """``x.spk.npy`` -> ``x.spk.orig.npy``: where --replace_close keeps the encoder's vector it overwrote."""
    return path.with_name(path.name[: -len(SUFFIX)] + ORIGINAL_SUFFIX)


def singer_mean(files: list[Path]) -> np.ndarray:
    """float32 mean of the embeddings in ``files`` (summed in float32 in order, then divided, as the original). A
    file that --replace_close rewrote counts with its kept original, so a rerun gives the same mean."""
    total = np.zeros(EMBED_DIM, dtype=np.float32)
    for path in files:
        original = original_of(path)
        total = total + read_speaker_file(original if original.is_file() else path)
    return (total / np.float32(len(files))).astype(np.float32)


def replace_close(files: list[Path], mean: np.ndarray, threshold: float) -> int:
    """Overwrite each file whose cosine similarity to ``mean`` is above ``threshold`` with ``mean``; returns the
    number replaced (the original's behaviour with threshold 0.85)."""
    import torch  # only --replace_close needs it (torch's cosine, as the original)

    ref = torch.from_numpy(mean)
    replaced = 0
    for path in files:
        original = original_of(path)
        vec = read_speaker_file(original if original.is_file() else path)
        cos = torch.cosine_similarity(ref, torch.from_numpy(vec), dim=0)
        if float(cos) > threshold:
            if not original.is_file():
                save_npy(original, vec)
            save_npy(path, mean)
            replaced += 1
    return replaced


def singer_f0_stats(pit_files: list[Path]) -> dict:
    """``pitch.key.f0_stats`` of the voiced frames of all ``pit_files`` (F0 ``[T]`` at 100 Hz), plus where they came
    from. Raises FeatureError naming an unreadable or malformed file."""
    voiced = []
    for path in pit_files:
        pit = read_pit(path)
        voiced.append(pit[np.isfinite(pit) & (pit > 0)])
    stats = f0_stats(np.concatenate(voiced) if voiced else np.zeros(0))
    stats["pitch_files"] = len(pit_files)
    stats["pitch_dir"] = str(pit_files[0].parent) if pit_files else None
    return stats


def average_singer(job: Job, _state=None) -> None:
    """Worker: mean of ``job.extra['files']`` -> ``job.outputs[0]`` and the F0 statistics of
    ``job.extra['pit_files']`` beside it; optional replacement of close files."""
    files = job.extra["files"]
    mean = singer_mean(files)
    pit_files = job.extra.get("pit_files") or []
    stats = singer_f0_stats(pit_files) if pit_files else None  # read before writing anything: a bad file fails both
    save_npy(job.outputs[0], mean)
    if stats is not None and stats["voiced_frames"]:
        write_singer_stats(job.outputs[0], stats)
    elif pit_files:
        log.warning("%s: no voiced frames in its %d pitch files: no F0 statistics (%s), --shift auto cannot use "
                    "this singer", job.src.name, len(pit_files), stats_path(job.outputs[0]))
    threshold = job.extra.get("replace_close")
    if threshold is not None:
        n = replace_close(files, mean, threshold)
        log.info("%s: replaced %d of %d vectors by the singer mean (cos > %s)", job.src.name, n, len(files), threshold)


def input_backend(in_root: Path) -> str | None:
    """The one backend named by the tags of ``in_root`` (its own or a parent's, and any inside it)."""
    tags = {}
    root_tag = read_backend_tag(in_root)
    if root_tag is not None:
        tags[str(in_root)] = root_tag
    for tag_file in sorted(in_root.rglob(TAG_FILE)):
        tags[str(tag_file.parent)] = read_backend_tag(tag_file.parent)
    names = sorted(set(tags.values()))
    if len(names) > 1:
        shown = ", ".join(f"{folder}: {name}" for folder, name in tags.items())
        raise ValueError(f"{in_root}: embeddings of different speaker backends cannot be averaged together ({shown})")
    return names[0] if names else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Average the speaker embeddings of each singer.")
    ap.add_argument("dataset_speaker", help="input folder of per-file embeddings (data_gvc/speaker)")
    ap.add_argument("dataset_singer", help="output folder of per-singer embeddings (data_gvc/singer)")
    ap.add_argument("-t", "--thread_count", type=int, default=1, help="worker processes (0 = all cores)")
    ap.add_argument("--replace_close", type=float, default=None, metavar="COS",
                    help="also overwrite each per-file vector whose cosine to the singer mean exceeds COS with the "
                         "mean, as the original did with 0.85 (default: leave the per-file vectors untouched)")
    ap.add_argument("--pitch", default=None, metavar="DIR",
                    help="F0 files <DIR>/<singer>/*.pit.npy for each singer's F0 statistics <singer>.f0.json "
                         "(default: the 'pitch' folder beside the input, data_gvc/pitch)")
    args = ap.parse_args(argv)
    setup_cli_logging()
    in_root, out_root = require_folder(args.dataset_speaker), Path(args.dataset_singer)
    try:
        name = input_backend(in_root)
        if name is not None:
            check_backend(out_root, name, f"the singer vectors in {out_root}")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if name is None:
        log.warning("%s has no %s: the speaker backend of these embeddings is unknown", in_root, TAG_FILE)
    stray = sorted(in_root.glob("*" + SUFFIX))
    if stray:
        log.warning("%s: %d embeddings outside a singer folder are ignored (e.g. %s)", in_root, len(stray), stray[0])
    pitch_root = Path(args.pitch) if args.pitch else (in_root if in_root.name else in_root.absolute()).parent / "pitch"
    jobs = []
    for singer in sorted(p for p in in_root.iterdir() if p.is_dir()):
        files = sorted(singer.glob("*" + SUFFIX))
        if not files:
            log.warning("%s: no %s files, skipped", singer, SUFFIX)
            continue
        pit_files = sorted((pitch_root / singer.name).glob("*" + PIT_SUFFIX))
        if not pit_files:
            log.warning("%s: no %s files in %s: no F0 statistics for this singer (--shift auto needs them; run step 2, "
                        "preprocess_f0.py, or give --pitch)", singer.name, PIT_SUFFIX, pitch_root / singer.name)
        jobs.append(Job(singer, [out_root / f"{singer.name}{SUFFIX}"],
                        {"files": files, "replace_close": args.replace_close, "pit_files": pit_files}))
    out_root.mkdir(parents=True, exist_ok=True)
    if name is not None:
        write_backend_tag(out_root, name)
    # always recomputed (cheap, and a singer folder may have gained files since the last run)
    summary = run_jobs(jobs, average_singer, args.thread_count, desc="singers", skip_done=False)
    return finish(summary, "singer average")


if __name__ == "__main__":
    sys.exit(main())

"""The file loop every ``prepare/`` command and folder-mode inference share.

Progress bar, ``workers`` processes (each loads its models once through ``init``), resumable (jobs whose outputs
all exist are skipped; outputs are written atomically so an existing file is complete), and a summary naming each
failed file with its reason. One bad file never stops the others; a full disk stops the loop (every later file
would fail the same way).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from common.io import DiskFullError
from common.runtime import tune_allocator

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One input file and the outputs it produces (``extra`` carries per-job arguments)."""

    src: Path
    outputs: list[Path]
    extra: dict[str, Any] = field(default_factory=dict)

    def done(self) -> bool:
        return bool(self.outputs) and all(p.is_file() for p in self.outputs)


@dataclass
class Summary:
    processed: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    interrupted: bool = False  # Ctrl-C: the jobs not started were left for the next run
    disk_full: str | None = None  # "no space left on device (<path>)": the loop stopped there
    not_started: int = 0  # jobs left undone when the loop stopped early (disk full)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.interrupted and self.disk_full is None

    def report(self, what: str, stream=None) -> None:
        stream = stream or sys.stderr
        print(f"{what}: {self.processed} processed, {self.skipped} already done, {len(self.failed)} failed",
              file=stream)
        for src, reason in self.failed:
            print(f"  FAILED {src}: {reason}", file=stream)
        if self.disk_full is not None:
            print(f"{what}: stopped: {self.disk_full}; {self.not_started} files not started. Free some space and "
                  "run the same command again: it goes on where this run stopped", file=stream)
        if self.interrupted:
            print(f"{what}: interrupted; the same command goes on where this run stopped", file=stream)


def resolve_workers(n: int | None) -> int:
    """``-t/--thread_count`` semantics of the original: 0 (or None) means all cores."""
    if not n or n <= 0:
        return max(1, os.cpu_count() or 1)
    return n


_STATE: dict[str, Any] = {}

# a spawned worker costs seconds (it imports torch, librosa and loads its model): only worth it for enough files
MIN_JOBS_PER_WORKER = 32


def _init_worker(init: Callable[..., Any] | None, init_args: tuple, threads: int) -> None:
    # Ctrl-C reaches the whole process group: the parent stops the run, a worker finishes its current file
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # before any numeric library starts its pool
    tune_allocator()
    _STATE["state"] = init(*init_args) if init is not None else None
    if "torch" in sys.modules:  # only workers that use torch pay for importing it
        sys.modules["torch"].set_num_threads(threads)


def _run_one(work: Callable[[Job, Any], None], job: Job) -> tuple[str, str | None, bool]:
    """(source, None or the failure's one line, whether the disk is full)."""
    try:
        work(job, _STATE.get("state"))
        return str(job.src), None, False
    except DiskFullError as exc:
        return str(job.src), str(exc), True
    except Exception as exc:  # noqa: BLE001 - every failure is reported per file, the loop goes on
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        if not isinstance(exc, (ValueError, OSError, RuntimeError)):
            msg = f"{exc.__class__.__name__}: {msg}"
        src = str(job.src)
        if msg.startswith(src + ": "):  # AudioError etc. already name the file
            msg = msg[len(src) + 2:]
        log.debug("failed %s", src, exc_info=True)
        return src, msg, False


def run_jobs(
    jobs: Iterable[Job],
    work: Callable[[Job, Any], None],
    workers: int = 1,
    desc: str = "files",
    init: Callable[..., Any] | None = None,
    init_args: tuple = (),
    skip_done: bool = True,
    ready: Any = None,
) -> Summary:
    """Run ``work(job, state)`` for every job not yet done; ``state = init(*init_args)`` once per process, or
    ``ready`` when the loop runs in this process and the caller already holds that state (models loaded once).

    ``work``, ``init`` and the job data must be picklable (module-level functions) when ``workers > 1``.
    """
    summary = Summary()
    todo = []
    for job in jobs:
        if skip_done and job.done():
            summary.skipped += 1
        else:
            todo.append(job)
    workers = max(1, min(resolve_workers(workers), -(-len(todo) // MIN_JOBS_PER_WORKER)))
    bar = tqdm(total=len(todo), desc=desc, unit="file", dynamic_ncols=True, disable=None)
    tune_allocator()
    if workers == 1:
        try:
            if ready is not None:
                state = ready
            else:
                state = init(*init_args) if init is not None and todo else None
            _STATE["state"] = state
            for i, job in enumerate(todo):
                src, err, full = _run_one(work, job)
                _record(summary, src, err, full)
                bar.update(1)
                if full:
                    summary.not_started = len(todo) - i - 1
                    break
        except KeyboardInterrupt:  # the file being written is discarded (atomic writes); the rest is left
            summary.interrupted = True
    else:
        import multiprocessing as mp

        # one process per core by default; each gets an equal share of the cores for intra-op threads
        threads = max(1, (os.cpu_count() or 1) // workers)
        pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                   initargs=(init, init_args, threads))
        futures = []
        try:
            futures.extend(pool.submit(_run_one, work, job) for job in todo)
            recorded = set()
            for fut in as_completed(futures):
                recorded.add(fut)
                src, err, full = fut.result()
                _record(summary, src, err, full)
                bar.update(1)
                if full:  # queued files never start; the workers finish the file they are on
                    for other in futures:
                        other.cancel()
                    pool.shutdown(wait=True, cancel_futures=True)
                    for other in futures:  # the files that were in progress then
                        if other not in recorded and not other.cancelled():
                            _record(summary, *other.result())
                            bar.update(1)
                    summary.not_started = sum(other.cancelled() for other in futures)
                    break
        except KeyboardInterrupt:
            summary.interrupted = True
            for fut in futures:  # queued files never start
                fut.cancel()
            print(f"{desc}: interrupted; finishing the files in progress", file=sys.stderr)
            _shutdown_ignoring_sigint(pool)
        finally:  # (the workers end with the file they are on)
            pool.shutdown(wait=True, cancel_futures=True)
    bar.close()
    _STATE.pop("state", None)
    return summary


def _shutdown_ignoring_sigint(pool: ProcessPoolExecutor) -> None:
    """Wait for the workers' files in progress (at most one each). A second Ctrl-C meanwhile is ignored: leaving
    the workers mid-file made the interpreter hang at exit."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: signals are not ours to change
        previous = None
    try:
        pool.shutdown(wait=True, cancel_futures=True)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _record(summary: Summary, src: str, err: str | None, disk_full: bool = False) -> None:
    if err is None:
        summary.processed += 1
    else:
        summary.failed.append((src, err))
        log.debug("failed %s: %s", src, err)
        if disk_full and summary.disk_full is None:
            summary.disk_full = err


def mirror_path(src: Path, src_root: Path, dst_root: Path, suffix: str) -> Path:
    """``src_root/<singer>/x.wav`` -> ``dst_root/<singer>/x<suffix>`` (keeps sub-folders)."""
    rel = Path(src).relative_to(src_root)
    return Path(dst_root) / rel.parent / (rel.stem + suffix)


def require_folder(path: str | Path) -> Path:
    """``path`` as a Path; when it is not a folder, one line ``error: <path>: input folder not found`` and exit 2."""
    folder = Path(path)
    if not folder.is_dir():
        print(f"error: {folder}: input folder not found", file=sys.stderr)
        raise SystemExit(2)
    return folder


def setup_cli_logging(verbose: bool = False) -> None:
    """Log lines for command-line tools (the library modules only log)."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(message)s")


def finish(summary: Summary, what: str) -> int:
    """Print the summary; the exit status is 130 after Ctrl-C, else 1 when any file failed (the others were still
    processed)."""
    summary.report(what)
    return 130 if summary.interrupted else 0 if summary.ok else 1

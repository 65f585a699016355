"""common/filewalk.py: the parallel, resumable file loop every prepare/ command uses."""

import os
from pathlib import Path

from common.filewalk import MIN_JOBS_PER_WORKER, Job, resolve_workers, run_jobs
from common.io import write_text


def _work(job: Job, state) -> None:
    if job.src.name == "bad":
        raise ValueError(f"{job.src}: cannot use this one")
    write_text(job.outputs[0], f"{state}:{os.getpid()}")


def _init(tag: str) -> str:
    return tag


def test_parallel_loop_processes_reports_and_resumes(tmp_path):
    n = 2 * MIN_JOBS_PER_WORKER + 3  # enough files for two worker processes
    jobs = [Job(tmp_path / ("bad" if i == 5 else f"f{i}"), [tmp_path / "out" / f"{i}.txt"]) for i in range(n)]
    summary = run_jobs(jobs, _work, workers=2, init=_init, init_args=("model",))
    assert summary.processed == n - 1 and summary.skipped == 0
    assert summary.failed == [(str(tmp_path / "bad"), "cannot use this one")]
    texts = [p.read_text() for p in (tmp_path / "out").iterdir()]
    assert all(t.startswith("model:") for t in texts)
    pids = {int(t.split(":")[1]) for t in texts}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2  # worker processes did the work (init ran in each)
    again = run_jobs(jobs, _work, workers=2, init=_init, init_args=("model",))
    assert again.skipped == n - 1 and again.processed == 0 and len(again.failed) == 1
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temp files left


def test_small_jobs_run_in_process_and_worker_count():
    assert resolve_workers(0) == (os.cpu_count() or 1) and resolve_workers(3) == 3
    jobs = [Job(Path(f"/nonexistent/f{i}"), []) for i in range(3)]  # no outputs: never "done"
    seen = []
    summary = run_jobs(jobs, lambda job, state: seen.append(os.getpid()), workers=0)
    assert summary.processed == 3 and set(seen) == {os.getpid()}  # too few files to pay for a worker


def test_atomic_writes_get_the_permissions_of_a_plain_write(tmp_path):
    """Outputs written through a temporary file are readable like any other file (mkstemp alone makes them 0600),
    keep the mode of a file they replace, and leave no temporary behind when the write fails."""
    import stat

    import pytest

    from common.io import atomic_path

    umask = os.umask(0)
    os.umask(umask)
    write_text(tmp_path / "a.txt", "x")
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o666 & ~umask
    (tmp_path / "b.txt").write_text("old")
    os.chmod(tmp_path / "b.txt", 0o640)
    write_text(tmp_path / "b.txt", "new")
    assert stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o640 and (tmp_path / "b.txt").read_text() == "new"
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "c.txt") as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def test_atomic_path_refuses_a_folder(tmp_path):
    """Writing onto an existing folder is one clear error, and nothing is left behind."""
    import numpy as np
    import pytest

    from common.io import save_npy

    with pytest.raises(IsADirectoryError, match="is a folder"):
        save_npy(tmp_path, np.zeros(3))
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_stops_the_loop_and_the_next_run_goes_on(tmp_path):
    """Ctrl-C (KeyboardInterrupt) ends the loop after the files already written: the summary says interrupted,
    finish() gives 130, and the same jobs run again do only the rest."""
    from common.filewalk import finish

    jobs = [Job(tmp_path / f"f{i}", [tmp_path / "out" / f"{i}.txt"]) for i in range(4)]
    calls = []

    def work(job, state):
        calls.append(job.src.name)
        if job.src.name == "f2" and calls.count("f2") == 1:
            raise KeyboardInterrupt
        write_text(job.outputs[0], "x")

    summary = run_jobs(jobs, work)
    assert summary.interrupted and summary.processed == 2 and finish(summary, "t") == 130
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0.txt", "1.txt"]
    again = run_jobs(jobs, work)
    assert again.skipped == 2 and again.processed == 2 and finish(again, "t") == 0


def test_durable_writes_reach_the_disk(tmp_path, monkeypatch):
    """Checkpoints (durable=True) are fsynced, file then folder, before the call returns; feature files are not."""
    import torch

    from common.io import save_torch

    synced = []
    real = os.fsync

    def record(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", record)
    save_torch(tmp_path / "ckpt.pt", {"w": torch.ones(2)}, durable=True)
    assert len(synced) == 2 and ".ckpt." in synced[0] and synced[1] == str(tmp_path)
    save_torch(tmp_path / "x.mel.pt", torch.ones(2))
    assert len(synced) == 2


def test_in_process_loop_uses_the_state_the_caller_holds(tmp_path):
    """``ready``: a loop that runs in this process takes the caller's state (models it already loaded) and never
    calls init a second time."""
    inits = []
    jobs = [Job(tmp_path / f"f{i}", [tmp_path / "out" / f"{i}.txt"]) for i in range(2)]
    summary = run_jobs(jobs, _work, workers=4, init=lambda: inits.append(1) or "fresh", ready="loaded")
    assert summary.processed == 2 and not inits
    assert all(p.read_text().startswith("loaded:") for p in (tmp_path / "out").iterdir())

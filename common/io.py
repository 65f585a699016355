"""Atomic file writes: an output either exists complete or not at all (resumable loops rely on this)."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np


def _new_file_mode() -> int:
    """The permissions ``open(path, "w")`` gives a new file under the current umask (mkstemp's are 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_NEW_FILE_MODE = _new_file_mode()

# a failed write with less than this left on the disk is taken as "disk full" (torch.save, soundfile and np.save
# report a full disk without errno ENOSPC: "unexpected pos 768 vs 662", LibsndfileError(2), "N requested, M written")
FULL_DISK_BYTES = 1 << 20
_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


class DiskFullError(OSError):
    """A write that failed because the disk is full: ``no space left on device (<path>)`` (errno ENOSPC)."""

    def __init__(self, path: str | Path):
        super().__init__(errno.ENOSPC, "no space left on device", str(path))

    def __str__(self) -> str:
        return f"no space left on device ({self.filename})"


def free_bytes(folder: str | Path) -> int | None:
    """Bytes an unprivileged user may still write in ``folder``'s file system (None when unknown)."""
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):  # no statvfs on Windows
        return None
    return st.f_bavail * st.f_frsize


def is_disk_full(exc: BaseException, folder: str | Path) -> bool:
    """Whether ``exc``, raised while writing into ``folder``, means the disk is full: errno ENOSPC / EDQUOT, or an
    OSError / RuntimeError of a writer that hides the errno while less than ``FULL_DISK_BYTES`` are left (checked
    before the partial file is removed)."""
    if isinstance(exc, DiskFullError):
        return True
    if isinstance(exc, OSError) and exc.errno is not None:  # a real errno says what happened
        return exc.errno in _FULL_ERRNOS
    if isinstance(exc, (OSError, RuntimeError)):
        free = free_bytes(folder)
        return free is not None and free < FULL_DISK_BYTES
    return False


def check_output_path(path: str | Path) -> Path:
    """``path`` as a Path; a one-line ``IsADirectoryError`` when it names an existing folder (check before the work
    whose result goes there)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder; give the output file's path")
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; move it onto ``path`` only if the block succeeds. The file
    gets the permissions a plain write would give (the replaced file's, else the umask's), not the temporary's.
    ``durable``: the data and the rename reach the disk before returning (fsync), so a power cut leaves the old or
    the new file, never an empty one (for checkpoints; feature files can be remade).
    A full disk raises ``DiskFullError`` naming ``path``, whatever the writer in the block reported.
    """
    path = check_output_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # keep the real suffix last so libraries that pick a format by extension (soundfile, np.save) behave
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp" + "".join(path.suffixes[-1:]),
                                   dir=path.parent)
    except OSError as exc:
        if is_disk_full(exc, path.parent):
            raise DiskFullError(path) from exc
        raise
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        mode = path.stat().st_mode & 0o7777 if path.exists() else _NEW_FILE_MODE
        os.chmod(tmp_path, mode)
        if durable:
            _fsync(tmp_path)
        os.replace(tmp_path, path)
        if durable and os.name == "posix":
            _fsync(path.parent)  # the directory entry of the rename
    except (OSError, RuntimeError) as exc:
        if is_disk_full(exc, path.parent):  # checked while the partial file still takes its space
            raise DiskFullError(path) from exc
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def save_npy(path: str | Path, array: np.ndarray) -> None:
    """``np.save`` to exactly ``path`` (no '.npy' appended), atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_torch(path: str | Path, obj, durable: bool = False) -> None:
    """``torch.save`` atomically (checkpoints with ``durable=True``, ``.mel.pt``)."""
    import torch

    with atomic_path(path, durable=durable) as tmp:
        torch.save(obj, tmp)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")

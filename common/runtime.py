"""Process-wide settings for the command-line tools.

``tune_allocator``: glibc serves every allocation above 128 KiB-32 MiB with a fresh ``mmap`` and returns it to the
OS on free, so each large temporary tensor (a 96-channel U-Net activation is 38 MB) is page-faulted and zeroed
again. Keeping such blocks in the heap made CPU inference markedly faster here (10 s song: the vocoder 5.0 -> 3.7 s,
a U-Net call 2.95 -> 2.55 s, HuBERT 1.47 -> 1.33 s; bench/results). Freed memory then stays with the process up
to the trim threshold (peak RSS is unchanged). ``GVC_MALLOC_TUNE=0`` turns it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import sys

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_THRESHOLD = 1 << 30  # 1 GiB
_done = False


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def default_device(device: str | None = None) -> str:
    """``device`` as given, else "cuda" when a GPU is visible, else "cpu" (torch imported only here)."""
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def synchronize(device) -> None:
    """Wait for the work queued on a CUDA ``device`` (timing); nothing elsewhere."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def tune_allocator() -> bool:
    """Raise glibc's mmap and trim thresholds to 1 GiB (once per process); False where it does not apply."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux") or os.environ.get("GVC_MALLOC_TUNE", "1") == "0":
        return False
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:  # musl or another libc without mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _done = bool(mallopt(_M_MMAP_THRESHOLD, _THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _THRESHOLD))
    log.debug("glibc malloc thresholds raised: %s", _done)
    return _done


def drop_primitive_cache() -> None:
    """Cache no oneDNN primitives in this process (``ONEDNN_PRIMITIVE_CACHE_CAPACITY=0`` unless the user set it).

    A cached convolution primitive keeps its scratchpad, sized by its input: for the vocoder's 24 s windows that
    held ~1 GB after the first two windows (each length its own primitives), never given back. Without the cache a
    conversion's peak RSS dropped by ~0.2-0.5 GB for ~10 % more vocoder CPU time (bench/bench_cli_memory.py).
    Read by oneDNN when it first builds a primitive, so call it before the first convolution.
    """
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "0")


def release_memory() -> None:
    """Return the heap's free pages to the OS (``malloc_trim``) after tune_allocator; call between large stages or
    windows, so memory held for reuse inside one stage does not add to the next stage's peak."""
    if _done:
        _libc().malloc_trim(0)  # tune_allocator succeeded: this is glibc

"""common.runtime (the allocator setting the command-line tools apply) and common.checkpoint.load_checkpoint."""

import subprocess
import sys

import pytest

PROBE = """
import ctypes, resource
from common.runtime import tune_allocator
ok = tune_allocator()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = 64 << 20
a = libc.malloc(size); ctypes.memset(a, 1, size); libc.free(a)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
b = libc.malloc(size); ctypes.memset(b, 1, size); libc.free(b)
# a block that went back to the OS is page-faulted again (64 MB = 16384 pages); one kept in the heap is not
print(ok, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults < 1000)
"""

@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
@pytest.mark.parametrize("env, expected", [({}, "True True"), ({"GVC_MALLOC_TUNE": "0"}, "False False")])
def test_tune_allocator_keeps_large_blocks_in_the_heap(env, expected):
    import os

    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env={**os.environ, **env},
                         check=True).stdout.strip()
    assert out.startswith(expected)


def test_load_checkpoint_reads_zip_and_legacy_saves(tmp_path):
    """Checkpoints are memory-mapped when their format allows (torch >= 1.6 zip saves) and read the old way
    otherwise: both give the saved tensors; an unreadable file is one CheckpointError naming it."""
    import torch

    from common.checkpoint import CheckpointError, load_checkpoint

    state = {"w": torch.arange(6.0).view(2, 3), "b": torch.ones(2)}
    torch.save(state, tmp_path / "zip.pt")
    torch.save(state, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    for name in ("zip.pt", "legacy.pt"):
        loaded = load_checkpoint(tmp_path / name)
        assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)
        loaded["w"].add_(1)  # a private mapping: writable, the file is unchanged
    assert torch.equal(load_checkpoint(tmp_path / "zip.pt")["w"], state["w"])
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt: cannot load checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")


def test_derived_values_are_remade_only_when_a_source_changes():
    """common.derived: one computation while the sources stay as they are; another after an in-place update, a
    replaced tensor or a cast."""
    import torch

    from common.derived import derived

    class Owner:
        pass

    owner, calls = Owner(), []
    w = torch.ones(3)

    def make():
        calls.append(1)
        return w * 2

    assert torch.equal(derived(owner, "_d", (w,), make), torch.full((3,), 2.0))
    derived(owner, "_d", (w,), make)
    assert len(calls) == 1
    w.add_(1)  # in place: the version counter moves
    assert torch.equal(derived(owner, "_d", (w,), make), torch.full((3,), 4.0)) and len(calls) == 2
    w = torch.zeros(3)  # another tensor
    assert torch.equal(derived(owner, "_d", (w,), make), torch.zeros(3)) and len(calls) == 3
    w = w.double()
    derived(owner, "_d", (w,), make)
    assert len(calls) == 4

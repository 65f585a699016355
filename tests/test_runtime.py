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
    with pytest.raises(CheckpointError, match="bad.pt: cannot load checkpoint: corrupt or not a PyTorch file"):
        load_checkpoint(tmp_path / "bad.pt")
    import argparse

    torch.save({"args": argparse.Namespace(x=1)}, tmp_path / "objects.pt")  # not only tensors: a trust question
    with pytest.raises(CheckpointError, match="objects.pt: cannot load checkpoint: it pickles objects other than"):
        load_checkpoint(tmp_path / "objects.pt")


def test_build_loaded_takes_the_files_tensors_without_copies(tmp_path):
    """build_loaded (the HuBERT loader's path): no random init, the model's tensors are the memory-mapped file's,
    a half-precision save comes back in the model's float32, and a model tensor the state dict cannot give (a
    non-persistent buffer) is a CheckpointError, not a meta tensor found later."""
    import torch
    from torch import nn

    from common.checkpoint import CheckpointError, build_loaded, load_checkpoint

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 3)
            self.register_buffer("scale", torch.ones(3))

    src = Net()
    src.scale.fill_(2.0)
    torch.save(src.state_dict(), tmp_path / "net.pt")
    state = load_checkpoint(tmp_path / "net.pt")
    net = build_loaded(Net, state, "net.pt")
    assert net.a.weight.data_ptr() == state["a.weight"].data_ptr()  # assigned, not copied
    x = torch.randn(2, 4)
    assert torch.equal(net.a(x), src.a(x)) and torch.equal(net.scale, src.scale)

    torch.save({k: v.half() for k, v in src.state_dict().items()}, tmp_path / "half.pt")
    half = build_loaded(Net, load_checkpoint(tmp_path / "half.pt"), "half.pt")
    assert half.a.weight.dtype == torch.float32
    assert torch.equal(half.a.weight, src.a.weight.half().float())

    class WithTable(Net):
        def __init__(self):
            super().__init__()
            self.register_buffer("table", torch.arange(3.0), persistent=False)

    with pytest.raises(CheckpointError, match="net.pt: 1 model tensors are not in the state dict"):
        build_loaded(WithTable, state, "net.pt")


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

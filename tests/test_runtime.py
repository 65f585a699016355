"""common.runtime: the allocator setting the command-line tools apply."""

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

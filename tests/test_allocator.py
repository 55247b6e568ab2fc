"""The allocator setting of the training processes: glibc keeps freed buffers for reuse."""

from __future__ import annotations

import subprocess
import sys

import pytest

from common.training import allocator

# In a fresh interpreter (the setting is per process and cannot be undone): a 31 MiB buffer is
# allocated, written and freed twice; the minor page faults of the second time are counted. With
# glibc's defaults the buffer is above the adaptive mmap threshold, so it is unmapped on free and
# the second one arrives as fresh pages (~7 900 faults); with the setting it comes from the heap,
# which keeps it, and the second one reuses it (0 faults).
SCRIPT = """
import ctypes, resource, sys
from common.training.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 31 << 20
faults = []
for _ in range(2):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    buffer = libc.malloc(size)
    ctypes.memset(buffer, 1, size)
    libc.free(buffer)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(applied, faults[1])
"""


def faults(mode: str) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(allocator._glibc() is None, reason="the setting is glibc's")
def test_freed_buffers_are_reused_not_faulted_back_in() -> None:
    applied, kept = faults("keep")
    _, default = faults("default")
    assert applied == "True"
    assert default > 7000  # 31 MiB / 4 KiB pages = 7 936
    assert kept < 100


def test_applied_once_and_the_same_answer_after() -> None:
    first = allocator.keep_freed_memory()
    assert allocator.keep_freed_memory() is first
    assert first == (allocator._glibc() is not None)

"""yt8m.cpu_memory: large CPU tensors come from glibc's heap, reused, not fresh pages
(Linux with glibc, as the project's machines)."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import numpy as np
from yt8m.cpu_memory import keep_freed_memory
if {keep}:
    assert keep_freed_memory()
address = np.ones(64 << 20, np.uint8).ctypes.data  # 64 MiB: above glibc's mmap threshold
heap = [line.split()[0].split("-") for line in open("/proc/self/maps") if "[heap]" in line]
print(any(int(lo, 16) <= address < int(hi, 16) for lo, hi in heap))
"""


@pytest.mark.parametrize("keep", [False, True])
def test_a_large_array_lives_in_the_heap_only_when_freed_memory_is_kept(keep):
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(keep=keep)], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == str(keep)

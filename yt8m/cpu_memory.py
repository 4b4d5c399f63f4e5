"""Keep freed memory for reuse on the CPU, so that large tensors cost no page faults.

glibc serves allocations above 32 MiB with fresh pages from the system and hands them
back when they are freed. A training step that allocates a new 1.1 GB hidden-layer
gradient every step (the VLAD and FV models) then page-faults through all of it every
step: measured, about 17% of the gated NetVLAD and NetFV training steps
(bench/RESULTS.md); averaging prediction files chunk by chunk, about 10%.
`keep_freed_memory` (called by train, eval and infer on the CPU, and by `yt8m average`)
makes glibc serve every allocation from its heap and keep what is freed there, so the
same memory is reused step after step. The process's memory is not returned to the
system before it exits. A no-op where the C library is not glibc.
"""

from __future__ import annotations

import ctypes

_M_TRIM_THRESHOLD = -1  # mallopt parameters (glibc's malloc.h)
_M_MMAP_MAX = -4
_NEVER_TRIM = 2**31 - 1  # bytes free at the top of the heap before any is returned


def keep_freed_memory() -> bool:
    """Switch glibc to heap-only allocation without trimming; True when it took effect."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM))

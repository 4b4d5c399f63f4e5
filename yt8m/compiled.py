"""Compiled loops: the project's few hot loops that numpy cannot do in one pass.

`kernel` is numba's `njit` with the project's settings: compiled on first call and cached
next to the module (``__pycache__``), so a later process loads it in milliseconds;
``nogil``, so threads run kernels side by side; bounds checks off (each kernel checks its
indices itself). Kernels take and return numpy arrays and plain numbers only, and every
kernel has a test against a plain-Python reference.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numba

F = TypeVar("F", bound=Callable)


def kernel(function: F) -> F:
    """Compile `function` (numpy arrays and numbers in and out) with numba."""
    return numba.njit(cache=True, nogil=True, boundscheck=False)(function)


def reordering_kernel(function: F) -> F:
    """`kernel` that lets the compiler reorder float comparisons (fast-math ``nnan`` and
    ``nsz``: NaN and the sign of zero may be ignored) so that a reduction runs on vector
    instructions. Only for callers that deal with NaN themselves."""
    return numba.njit(cache=True, nogil=True, boundscheck=False, fastmath={"nnan", "nsz"})(function)

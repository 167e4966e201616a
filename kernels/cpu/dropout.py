"""Inverted dropout on the CPU: keep each element with probability 1 − p and scale it by 1/(1 − p).

    mask = [u ≥ p] / (1 − p),  u uniform in [0, 1) per element;   y = x · mask;   dx = dy · mask

(so E[y] = x, and evaluation needs no rescaling). p = 1 drops everything: the mask is all zeros.

The random numbers come from a counter-based generator: u for the flat index i is splitmix64 of
seed + (i + 1)·γ, a fixed function of (seed, i). Each thread of kernels/cpu/threads.py computes its own
range of elements' numbers with no shared state (a serial `nogil` kernel over the range: a `prange` loop
compiles about half a second longer), the mask does not depend on the number of threads, and a GPU kernel
using the same function makes the same mask. The op layer draws the seed from tinycnn.random.next_seed(), so
tinycnn.manual_seed makes the masks repeatable.
"""
import numpy as np
from numba import njit

from . import threads

_GAMMA = np.uint64(0x9E3779B97F4A7C15)   # 2⁶⁴ / golden ratio: the splitmix64 step
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@njit(cache=True)
def uniform(seed, i):
    """splitmix64(seed + (i + 1)·γ) -> a float in [0, 1) with 53 random bits (uint64 arithmetic wraps)."""
    z = np.uint64(seed) + np.uint64(i + 1) * _GAMMA
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    z = z ^ (z >> np.uint64(31))
    return np.float64(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)  # / 2⁵³


@njit(cache=True, nogil=True, error_model="numpy")
def _dropout(x, p, seed, y, mask, i0, i1):
    """The elements i0 ≤ i < i1 of the flat arrays, taken as slices (indexed as x[i] instead, LLVM left the
    loop scalar, 4× slower)."""
    scale = x.dtype.type(1.0 / (1.0 - p) if p < 1.0 else 0.0)
    zero = x.dtype.type(0)
    xs, ys, ms = x[i0:i1], y[i0:i1], mask[i0:i1]
    for k in range(xs.size):
        m = scale if uniform(seed, i0 + k) >= p else zero
        ms[k] = m
        ys[k] = xs[k] * m


def dropout_forward(x, p, seed):
    """x (any shape) -> (y, mask), both like x; mask holds 0 or 1/(1 − p)."""
    y = np.empty_like(x, order="C")
    mask = np.empty_like(x, order="C")
    threads.on_threads(_dropout, x.size, x.size, np.ascontiguousarray(x).reshape(-1), float(p), int(seed), y.reshape(-1),
                       mask.reshape(-1))
    return y, mask


def dropout_backward(dy, mask):
    """dx = dy · mask (a single NumPy multiply: nothing to gain from a loop)."""
    return dy * mask

"""Inverted dropout on the GPU: keep each element with probability 1 − p and scale it by 1/(1 − p).

    mask = [u ≥ p] / (1 − p),  u uniform in [0, 1) per element;   y = x · mask;   dx = dy · mask

The random numbers are the CPU kernel's (kernels/cpu/dropout.py), bit for bit: u for the flat index i is
splitmix64(seed + (i + 1)·γ) >> 11, divided by 2⁵³. Each thread computes the numbers of its own elements
from (seed, i) alone, so the GPU makes exactly the CPU's mask. The test u ≥ p is done on the integer:
u ≥ p  ⇔  (z >> 11) ≥ ⌈p · 2⁵³⌉, so no float64 is needed on the GPU.
"""
import math

import numpy as np
from numba import cuda, uint64

from . import _launch as gpu

GAMMA = np.uint64(0x9E3779B97F4A7C15)   # 2⁶⁴ / golden ratio: the splitmix64 step
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)
S30, S27, S31, S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)


@cuda.jit(device=True)
def random_bits(seed, i):
    """splitmix64(seed + (i + 1)·γ) >> 11: 53 random bits (uint64 arithmetic wraps around)."""
    z = seed + uint64(i + 1) * GAMMA
    z = (z ^ (z >> S30)) * MIX1
    z = (z ^ (z >> S27)) * MIX2
    z = z ^ (z >> S31)
    return z >> S11


@cuda.jit(cache=True)
def dropout_kernel(x, seed, threshold, scale, y, mask):
    """mask[i] = scale if random_bits(seed, i) ≥ threshold else 0;  y[i] = x[i] · mask[i]."""
    zero = mask.dtype.type(0)
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        m = scale if random_bits(seed, i) >= threshold else zero
        mask[i] = m
        y[i] = x[i] * m


@cuda.jit(cache=True)
def mul_kernel(a, b, out):
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[i] = a[i] * b[i]


def dropout_forward(x, p, seed):
    """x (any shape) -> (y, mask), both like x; mask holds 0 or 1/(1 − p)."""
    p = float(p)
    y, mask = gpu.empty(x.shape, x.dtype), gpu.empty(x.shape, x.dtype)
    if x.size:
        threshold = np.uint64(min(math.ceil(p * 2.0 ** 53), 2 ** 53))
        scale = gpu.scalar(1.0 / (1.0 - p) if p < 1.0 else 0.0, x.dtype)
        seed = np.uint64(int(seed) % 2 ** 64)
        gpu.launch1d(dropout_kernel, x.size, gpu.flat(x), seed, threshold, scale, gpu.flat(y), gpu.flat(mask))
    return y, mask


def dropout_backward(dy, mask):
    dx = gpu.empty(dy.shape, dy.dtype)
    if dx.size:
        gpu.launch1d(mul_kernel, dx.size, gpu.flat(dy), gpu.flat(mask), gpu.flat(dx))
    return dx

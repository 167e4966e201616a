"""Detection kernels on the GPU: the sigmoid focal loss of a centre heat-map (formulas in
kernels/reference/detection.py; the CPU twin is kernels/cpu/detection.py).

    focal_loss_forward(z, t, alpha, beta) -> 0-d device array: Σ l / max(1, positives)
    focal_loss_backward(z, t, alpha, beta, g) -> dl/dz (z's shape and dtype), times the upstream g

Two-pass reductions without atomics, as kernels/cuda/loss.py: a grid of at most RED blocks strides over the
elements, each thread summing its terms and counting the positive elements (target 1); each block combines
its threads' sums in shared memory into one partial sum and one partial count; then one block adds the
partials and divides (`finish_kernel`). The backward counts the positives the same way, then a grid-stride
kernel writes each element's gradient, reading the count on the device.
"""
import math

import numpy as np
from numba import cuda

from . import _launch as gpu
from ._launch import RED
from .reduce import SUM, block_reduce


@cuda.jit(device=True)
def _softplus(z, zero):
    return max(z, zero) + math.log1p(math.exp(-abs(z)))


@cuda.jit(device=True)
def _sigmoid(z, one):
    e = math.exp(-abs(z))
    return one / (one + e) if z >= 0 else e / (one + e)


@cuda.jit(cache=True)
def focal_terms_kernel(z, t, alpha, beta, partial, partial_count):
    sh = cuda.shared.array(RED, dtype=partial.dtype)
    zero, one = partial.dtype.type(0), partial.dtype.type(1)
    acc, count = zero, zero
    for i in range(cuda.grid(1), z.size, cuda.gridsize(1)):
        zi, ti = z[i], t[i]
        p = _sigmoid(zi, one)
        if ti >= one:
            acc += (one - p) ** alpha * _softplus(-zi, zero)
            count += one
        else:
            acc += (one - ti) ** beta * p ** alpha * _softplus(zi, zero)
    total = block_reduce(sh, acc, SUM)
    if cuda.threadIdx.x == 0:
        partial[cuda.blockIdx.x] = total
    cuda.syncthreads()
    positives = block_reduce(sh, count, SUM)
    if cuda.threadIdx.x == 0:
        partial_count[cuda.blockIdx.x] = positives


@cuda.jit(cache=True)
def finish_kernel(partial, partial_count, n_parts, divide, out):
    """out[0] = Σ partial / max(1, Σ partial_count) if divide, else Σ partial_count; one block of RED threads."""
    sh = cuda.shared.array(RED, dtype=out.dtype)
    one = out.dtype.type(1)
    acc, count = out.dtype.type(0), out.dtype.type(0)
    for i in range(cuda.threadIdx.x, n_parts, cuda.blockDim.x):
        acc += partial[i]
        count += partial_count[i]
    total = block_reduce(sh, acc, SUM)
    cuda.syncthreads()
    positives = block_reduce(sh, count, SUM)
    if cuda.threadIdx.x == 0:
        out[0] = total / max(one, positives) if divide else positives


@cuda.jit(cache=True)
def focal_grad_kernel(z, t, alpha, beta, g, positives, dz):
    zero, one = dz.dtype.type(0), dz.dtype.type(1)
    scale = g / max(one, positives[0])
    for i in range(cuda.grid(1), z.size, cuda.gridsize(1)):
        zi, ti = z[i], t[i]
        p = _sigmoid(zi, one)
        if ti >= one:
            d = alpha * p * (one - p) ** alpha * -_softplus(-zi, zero) - (one - p) ** (alpha + one)
        else:
            d = (one - ti) ** beta * (p ** (alpha + one) + alpha * p ** alpha * (one - p) * _softplus(zi, zero))
        dz[i] = scale * d


def _reduce(z, t, alpha, beta, divide):
    dtype = np.dtype(z.dtype)
    blocks = max(1, min(gpu.cdiv(z.size, RED), RED))
    partial = gpu.workspace("detection.partial", (blocks,), dtype)
    partial_count = gpu.workspace("detection.count", (blocks,), dtype)
    gpu.launch(focal_terms_kernel, blocks, RED, gpu.flat(z), gpu.flat(t), gpu.scalar(alpha, dtype),
               gpu.scalar(beta, dtype), partial, partial_count)
    out = gpu.empty((), dtype)
    gpu.launch(finish_kernel, 1, RED, partial, partial_count, blocks, divide, gpu.flat(out))
    return out


def focal_loss_forward(z, t, alpha, beta):
    return _reduce(z, t, alpha, beta, True)


def focal_loss_backward(z, t, alpha, beta, g):
    dtype = np.dtype(z.dtype)
    positives = _reduce(z, t, alpha, beta, False)
    dz = gpu.empty(z.shape, dtype)
    gpu.launch1d(focal_grad_kernel, z.size, gpu.flat(z), gpu.flat(t), gpu.scalar(alpha, dtype),
                 gpu.scalar(beta, dtype), gpu.scalar(float(g), dtype), gpu.flat(positives), gpu.flat(dz))
    return dz

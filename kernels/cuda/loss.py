"""Losses on the GPU: each forward returns the mean loss (a 0-d device array in the input's dtype), each
backward the gradient of the input for an upstream gradient `g` (a Python number, or a device array).

The losses and their gradients are kernels/cpu/loss.py's (its docstring has the formulas): BCE with logits,
BCE on probabilities, cross-entropy over (N, C, inner) logits, MSE.

The means are two-pass reductions, with no atomics: a grid of at most RED blocks strides over the elements,
each thread summing its terms; each block combines its threads' sums in shared memory (reduce.block_reduce)
into one partial sum; then one block adds the partial sums and divides (`finish_kernel`).
`w` and `pw` (optional, broadcast to the input) are read per element; the gradients are grid-stride kernels.
The loss value never leaves the device here (the op layer decides when to read it).
"""
import math

import numpy as np
from numba import cuda

from . import _launch as gpu
from ._launch import RED
from .elementwise import astype, broadcast_to, full
from .reduce import SUM, block_reduce


# ------------------------------------------------------------------------------------------ helpers


@cuda.jit(device=True)
def sigmoid(z, one):
    e = math.exp(-abs(z))
    return one / (one + e) if z >= 0 else e / (one + e)


@cuda.jit(cache=True)
def finish_kernel(partial, n_parts, scale, out):
    """out[0] = scale · Σ partial[:n_parts]; one block of RED threads."""
    sh = cuda.shared.array(RED, dtype=out.dtype)
    acc = out.dtype.type(0)
    for i in range(cuda.threadIdx.x, n_parts, cuda.blockDim.x):
        acc += partial[i]
    total = block_reduce(sh, acc, SUM)
    if cuda.threadIdx.x == 0:
        out[0] = total * scale


def _blocks(n):
    return max(1, min(gpu.cdiv(n, RED), RED))


def _mean(kernel, n, dtype, *args):
    """The mean over n elements of the terms that `kernel` sums into per-block partial sums."""
    dtype = np.dtype(dtype)
    blocks = _blocks(n)
    partial = gpu.workspace("loss.partial", (blocks,), dtype)
    gpu.launch(kernel, blocks, RED, *args, partial)
    out = gpu.empty((), dtype)
    gpu.launch(finish_kernel, 1, RED, partial, blocks, gpu.scalar(1.0 / n, dtype), gpu.flat(out))
    return out


def _per_element(v, like):
    """(flat array, present): v broadcast to like's shape, or a stand-in and False for None."""
    if v is None:
        return gpu.flat(like), False
    if tuple(v.shape) != tuple(like.shape):
        v = broadcast_to(v if np.dtype(v.dtype) == np.dtype(like.dtype) else astype(v, like.dtype), like.shape)
    return gpu.flat(v), True


_ones = {}


def _device_number(value, factor, dtype):
    """A number the kernels read as arr[0] · f: a device array (0-d) stays on the device, a Python number
    becomes f (with a shared device 1)."""
    dtype = np.dtype(dtype)
    if gpu.is_device_array(value):
        return gpu.flat(value), gpu.scalar(factor, dtype)
    if dtype not in _ones:
        _ones[dtype] = full((1,), 1, dtype)
    return _ones[dtype], gpu.scalar(float(value) * factor, dtype)


# ------------------------------------------------------------------------------------------ BCE with logits


@cuda.jit(cache=True)
def bce_with_logits_terms_kernel(z, t, pw, has_pw, w, has_w, partial):
    sh = cuda.shared.array(RED, dtype=partial.dtype)
    zero, one = partial.dtype.type(0), partial.dtype.type(1)   # constants in the input's dtype
    acc = zero
    for i in range(cuda.grid(1), z.size, cuda.gridsize(1)):
        zi = z[i]
        log_term = math.log1p(math.exp(-abs(zi)))
        softplus_z = max(zi, zero) + log_term          # −log(1 − σ(z))
        softplus_minus_z = max(-zi, zero) + log_term   # −log σ(z)
        pwi = pw[i] if has_pw else one
        wi = w[i] if has_w else one
        acc += wi * (pwi * t[i] * softplus_minus_z + (one - t[i]) * softplus_z)
    total = block_reduce(sh, acc, SUM)
    if cuda.threadIdx.x == 0:
        partial[cuda.blockIdx.x] = total


@cuda.jit(cache=True)
def bce_with_logits_grad_kernel(z, t, pw, has_pw, w, has_w, g, g_factor, dz):
    one = dz.dtype.type(1)
    scale = g[0] * g_factor
    for i in range(cuda.grid(1), z.size, cuda.gridsize(1)):
        s = sigmoid(z[i], one)
        pwi = pw[i] if has_pw else one
        wi = w[i] if has_w else one
        dz[i] = scale * wi * ((one - t[i]) * s - pwi * t[i] * (one - s))


def bce_with_logits_forward(z, t, pos_weight, weight=None):
    return _mean(bce_with_logits_terms_kernel, z.size, z.dtype, gpu.flat(z), gpu.flat(t),
                 *_per_element(pos_weight, z), *_per_element(weight, z))


def bce_with_logits_backward(z, t, pos_weight, g, weight=None):
    dz = gpu.empty(z.shape, z.dtype)
    gpu.launch1d(bce_with_logits_grad_kernel, z.size, gpu.flat(z), gpu.flat(t), *_per_element(pos_weight, z),
                 *_per_element(weight, z), *_device_number(g, 1.0 / z.size, z.dtype), gpu.flat(dz))
    return dz


# ------------------------------------------------------------------------------------------ BCE


@cuda.jit(cache=True)
def bce_terms_kernel(p, t, eps, w, has_w, partial):
    sh = cuda.shared.array(RED, dtype=partial.dtype)
    one = partial.dtype.type(1)
    acc = partial.dtype.type(0)
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        q = min(max(p[i], eps), one - eps)
        wi = w[i] if has_w else one
        acc -= wi * (t[i] * math.log(q) + (one - t[i]) * math.log(one - q))
    total = block_reduce(sh, acc, SUM)
    if cuda.threadIdx.x == 0:
        partial[cuda.blockIdx.x] = total


@cuda.jit(cache=True)
def bce_grad_kernel(p, t, eps, w, has_w, g, g_factor, dp):
    zero, one = dp.dtype.type(0), dp.dtype.type(1)
    scale = g[0] * g_factor
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        pi = p[i]
        wi = w[i] if has_w else one
        if pi > eps and pi < one - eps:
            dp[i] = scale * wi * ((one - t[i]) / (one - pi) - t[i] / pi)
        else:
            dp[i] = zero                    # the clip passes no gradient


def bce_forward(p, t, eps, weight=None):
    return _mean(bce_terms_kernel, p.size, p.dtype, gpu.flat(p), gpu.flat(t), gpu.scalar(eps, p.dtype),
                 *_per_element(weight, p))


def bce_backward(p, t, eps, g, weight=None):
    dp = gpu.empty(p.shape, p.dtype)
    gpu.launch1d(bce_grad_kernel, p.size, gpu.flat(p), gpu.flat(t), gpu.scalar(eps, p.dtype), *_per_element(weight, p),
                 *_device_number(g, 1.0 / p.size, p.dtype), gpu.flat(dp))
    return dp


# ------------------------------------------------------------------------------------------ cross-entropy


@cuda.jit(cache=True)
def cross_entropy_kernel(x, target, weight, has_weight, ignore_index, C, inner, log_probs, partial_loss,
                         partial_weight):
    """One thread per (n, i) position: log-softmax over the C classes (stride inner), then its loss term
    −w[t] log p[t] and weight w[t] (0 and 0 when t = ignore_index), summed per block."""
    sh = cuda.shared.array(RED, dtype=log_probs.dtype)
    zero, one = log_probs.dtype.type(0), log_probs.dtype.type(1)
    loss = zero
    wsum = zero
    for q in range(cuda.grid(1), target.size, cuda.gridsize(1)):
        base = (q // inner) * C * inner + q % inner
        m = x[base]
        for c in range(1, C):
            m = max(m, x[base + c * inner])
        total = zero
        for c in range(C):
            total += math.exp(x[base + c * inner] - m)
        log_norm = m + math.log(total)
        for c in range(C):
            log_probs[base + c * inner] = x[base + c * inner] - log_norm
        tq = target[q]
        if tq != ignore_index:
            wt = weight[tq] if has_weight else one
            loss -= wt * (x[base + tq * inner] - log_norm)
            wsum += wt
    loss = block_reduce(sh, loss, SUM)
    wsum = block_reduce(sh, wsum, SUM)
    if cuda.threadIdx.x == 0:
        partial_loss[cuda.blockIdx.x] = loss
        partial_weight[cuda.blockIdx.x] = wsum


@cuda.jit(cache=True)
def cross_entropy_finish_kernel(partial_loss, partial_weight, n_parts, loss_out, weight_out):
    """loss = Σ loss / Σ w (NaN when nothing counted, as PyTorch), weight_out = Σ w; one block."""
    sh = cuda.shared.array(RED, dtype=loss_out.dtype)
    a = loss_out.dtype.type(0)
    b = loss_out.dtype.type(0)
    for i in range(cuda.threadIdx.x, n_parts, cuda.blockDim.x):
        a += partial_loss[i]
        b += partial_weight[i]
    a = block_reduce(sh, a, SUM)
    b = block_reduce(sh, b, SUM)
    if cuda.threadIdx.x == 0:
        weight_out[0] = b
        if b != 0:
            loss_out[0] = a / b
        else:
            loss_out[0] = math.nan


@cuda.jit(cache=True)
def cross_entropy_grad_kernel(log_probs, target, weight, has_weight, ignore_index, C, inner, g, g_factor,
                              wsum, wsum_factor, dx):
    """dx = g · w[t] (e^log_probs − onehot(t)) / Σw; 0 on ignored pixels."""
    zero, one = dx.dtype.type(0), dx.dtype.type(1)
    den = wsum[0] * wsum_factor
    scale = (g[0] * g_factor) / den if den != 0 else zero
    for k in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        c = (k // inner) % C
        tq = target[(k // (C * inner)) * inner + k % inner]
        if tq == ignore_index:
            dx[k] = zero
        else:
            wt = weight[tq] if has_weight else one
            dx[k] = scale * wt * (math.exp(log_probs[k]) - (one if c == tq else zero))


def cross_entropy_forward(x3, target2, weight, ignore_index):
    """-> (mean loss (0-d), log_probs3 (N, C, inner), weight_sum (0-d)), all on the device."""
    N, C, inner = x3.shape
    dtype = np.dtype(x3.dtype)
    log_probs3 = gpu.empty(x3.shape, dtype)
    n = N * inner
    blocks = _blocks(n)
    partial_loss = gpu.workspace("ce.loss", (blocks,), dtype)
    partial_weight = gpu.workspace("ce.weight", (blocks,), dtype)
    has_weight = weight is not None
    gpu.launch(cross_entropy_kernel, blocks, RED, gpu.flat(x3), gpu.flat(target2),
               gpu.flat(weight if has_weight else x3), has_weight, int(ignore_index), C, inner, gpu.flat(log_probs3),
               partial_loss, partial_weight)
    loss, weight_sum = gpu.empty((), dtype), gpu.empty((), dtype)
    gpu.launch(cross_entropy_finish_kernel, 1, RED, partial_loss, partial_weight, blocks, gpu.flat(loss),
               gpu.flat(weight_sum))
    return loss, log_probs3, weight_sum


def cross_entropy_backward(log_probs3, target2, weight, ignore_index, weight_sum, g):
    N, C, inner = log_probs3.shape
    dtype = np.dtype(log_probs3.dtype)
    dx3 = gpu.empty(log_probs3.shape, dtype)
    if dx3.size:
        has_weight = weight is not None
        gpu.launch1d(cross_entropy_grad_kernel, dx3.size, gpu.flat(log_probs3), gpu.flat(target2),
                     gpu.flat(weight if has_weight else log_probs3), has_weight, int(ignore_index), C, inner,
                     *_device_number(g, 1.0, dtype), *_device_number(weight_sum, 1.0, dtype), gpu.flat(dx3))
    return dx3


# ------------------------------------------------------------------------------------------ MSE


@cuda.jit(cache=True)
def squared_error_terms_kernel(p, t, partial):
    sh = cuda.shared.array(RED, dtype=partial.dtype)
    acc = partial.dtype.type(0)
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        d = p[i] - t[i]
        acc += d * d
    total = block_reduce(sh, acc, SUM)
    if cuda.threadIdx.x == 0:
        partial[cuda.blockIdx.x] = total


@cuda.jit(cache=True)
def squared_error_grad_kernel(p, t, g, g_factor, dp):
    scale = g[0] * g_factor
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        dp[i] = scale * (p[i] - t[i])


def mse_forward(p, t):
    return _mean(squared_error_terms_kernel, p.size, p.dtype, gpu.flat(p), gpu.flat(t))


def mse_backward(p, t, g):
    dp = gpu.empty(p.shape, p.dtype)
    gpu.launch1d(squared_error_grad_kernel, p.size, gpu.flat(p), gpu.flat(t), *_device_number(g, 2.0 / p.size, p.dtype),
                 gpu.flat(dp))
    return dp

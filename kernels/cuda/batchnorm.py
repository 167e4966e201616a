"""Batch normalisation on the GPU, x viewed as (N, C, inner) (inner = H·W, or 1 for (N, C) inputs).

Per channel c, over its M = N · inner values:

    mean_c = Σ x / M          var_c = Σ (x − mean_c)² / M          invstd_c = 1 / √(var_c + ε)
    x̂ = (x − mean_c) · invstd_c          y = γ_c x̂ + β_c
    backward:  dβ_c = Σ dy     dγ_c = Σ dy x̂     dx = γ_c invstd_c · (dy − dβ_c / M − x̂ · dγ_c / M)

The per-channel sums are block reductions: one block of RED threads per channel strides over the
channel's M values, then combines its partial sums in shared memory (reduce.block_reduce). Two passes as
on the CPU: the mean first, then the squared deviations. The per-element parts (y, dx) are grid-stride
kernels reading the channel's statistics (c = (i // inner) % C).
"""
import math

from numba import cuda, float32

from . import _launch as gpu
from ._launch import RED
from .reduce import SUM, block_reduce



@cuda.jit(cache=True)
def stats_kernel(x, C, inner, eps, mean, invstd, var_unbiased):
    """Block c: mean, 1/√(var + ε) and the unbiased variance of channel c. x: (N, C, inner) flat."""
    sh = cuda.shared.array(RED, dtype=mean.dtype)
    zero, one = mean.dtype.type(0), mean.dtype.type(1)      # in the array's dtype
    c = cuda.blockIdx.x
    M = x.size // C
    count = float32(M)
    total = zero
    for r in range(cuda.threadIdx.x, M, cuda.blockDim.x):
        total += x[((r // inner) * C + c) * inner + r % inner]
    mu = block_reduce(sh, total, SUM) / count
    squares = zero
    for r in range(cuda.threadIdx.x, M, cuda.blockDim.x):
        d = x[((r // inner) * C + c) * inner + r % inner] - mu
        squares += d * d
    squares = block_reduce(sh, squares, SUM)
    if cuda.threadIdx.x == 0:
        mean[c] = mu
        invstd[c] = one / math.sqrt(squares / count + eps)
        if M > 1:
            var_unbiased[c] = squares / (count - one)
        else:
            var_unbiased[c] = math.nan


@cuda.jit(cache=True)
def affine_kernel(x, C, inner, gamma, beta, mean, invstd, y):
    """y = x · scale_c + shift_c, scale_c = γ_c invstd_c, shift_c = β_c − mean_c scale_c (train and eval)."""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        c = (i // inner) % C
        scale = gamma[c] * invstd[c]
        y[i] = x[i] * scale + (beta[c] - mean[c] * scale)


@cuda.jit(cache=True)
def eval_affine_kernel(x, C, inner, gamma, beta, running_mean, running_var, eps, y):
    """y = x · scale_c + shift_c, scale_c = γ_c / √(running_var_c + ε), shift_c = β_c − running_mean_c scale_c."""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        c = (i // inner) % C
        scale = gamma[c] / math.sqrt(running_var[c] + eps)
        y[i] = x[i] * scale + (beta[c] - running_mean[c] * scale)


@cuda.jit(cache=True)
def grad_sums_kernel(dy, x, C, inner, mean, invstd, dgamma, dbeta):
    """Block c: dβ_c = Σ dy, dγ_c = Σ dy · x̂ over channel c."""
    sh = cuda.shared.array(RED, dtype=dgamma.dtype)
    c = cuda.blockIdx.x
    M = x.size // C
    mu = mean[c]
    inv = invstd[c]
    s_dy = dgamma.dtype.type(0)
    s_dy_xhat = dgamma.dtype.type(0)
    for r in range(cuda.threadIdx.x, M, cuda.blockDim.x):
        k = ((r // inner) * C + c) * inner + r % inner
        s_dy += dy[k]
        s_dy_xhat += dy[k] * (x[k] - mu) * inv
    s_dy = block_reduce(sh, s_dy, SUM)
    s_dy_xhat = block_reduce(sh, s_dy_xhat, SUM)
    if cuda.threadIdx.x == 0:
        dbeta[c] = s_dy
        dgamma[c] = s_dy_xhat


@cuda.jit(cache=True)
def input_grad_kernel(dy, x, C, inner, gamma, mean, invstd, dgamma, dbeta, dx):
    """dx = γ invstd · (dy − dβ / M − x̂ dγ / M)."""
    count = float32(x.size // C)
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        c = (i // inner) % C
        inv = invstd[c]
        x_hat = (x[i] - mean[c]) * inv
        dx[i] = gamma[c] * inv * (dy[i] - dbeta[c] / count - x_hat * (dgamma[c] / count))


@cuda.jit(cache=True)
def blend_kernel(running, batch_value, momentum):
    """running = (1 − m) running + m batch_value, in place."""
    one = running.dtype.type(1)
    for i in range(cuda.grid(1), running.size, cuda.gridsize(1)):
        running[i] = (one - momentum) * running[i] + momentum * batch_value[i]


def batch_norm_train_forward(x3, gamma, beta, eps):
    N, C, inner = x3.shape
    y3 = gpu.empty(x3.shape, x3.dtype)
    mean, invstd, var_unbiased = (gpu.empty((C,), x3.dtype) for _ in range(3))
    if x3.size:
        gpu.launch(stats_kernel, C, RED, gpu.flat(x3), C, inner, gpu.scalar(eps, x3.dtype), mean, invstd, var_unbiased)
        gpu.launch1d(affine_kernel, x3.size, gpu.flat(x3), C, inner, gamma, beta, mean, invstd, gpu.flat(y3))
    return y3, mean, invstd, var_unbiased


def batch_norm_eval_forward(x3, gamma, beta, running_mean, running_var, eps):
    N, C, inner = x3.shape
    y3 = gpu.empty(x3.shape, x3.dtype)
    if x3.size:
        gpu.launch1d(eval_affine_kernel, x3.size, gpu.flat(x3), C, inner, gamma, beta, running_mean, running_var,
                     gpu.scalar(eps, x3.dtype), gpu.flat(y3))
    return y3


def batch_norm_backward(dy3, x3, gamma, mean, invstd, need_dx, need_dgamma, need_dbeta):
    N, C, inner = x3.shape
    dgamma, dbeta = gpu.empty((C,), x3.dtype), gpu.empty((C,), x3.dtype)
    gpu.launch(grad_sums_kernel, C, RED, gpu.flat(dy3), gpu.flat(x3), C, inner, mean, invstd, dgamma, dbeta)
    dx3 = None
    if need_dx:
        dx3 = gpu.empty(x3.shape, x3.dtype)
        gpu.launch1d(input_grad_kernel, x3.size, gpu.flat(dy3), gpu.flat(x3), C, inner, gamma, mean, invstd,
                     dgamma, dbeta, gpu.flat(dx3))
    return dx3, (dgamma if need_dgamma else None), (dbeta if need_dbeta else None)


def update_running(running, batch_value, momentum):
    gpu.launch1d(blend_kernel, running.size, running, batch_value, gpu.scalar(momentum, running.dtype))

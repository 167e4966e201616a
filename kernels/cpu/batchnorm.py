"""Batch normalisation on the CPU, x viewed as (N, C, inner) (inner = H·W, or 1 for (N, C) inputs).

Per channel c, over its M = N · inner values:

    mean_c = Σ x / M          var_c = Σ (x − mean_c)² / M          invstd_c = 1 / √(var_c + ε)
    x̂ = (x − mean_c) · invstd_c          y = γ_c x̂ + β_c
    backward:  dβ_c = Σ dy     dγ_c = Σ dy x̂     dx = γ_c invstd_c · (dy − dβ_c / M − x̂ · dγ_c / M)

Every channel's sums are independent of the others', so each kernel gives whole channels to the threads
(`prange` over C): no two threads ever write the same value, and no sum is split between threads. The
statistics are accumulated in float64 (two passes: the mean first, then the squared deviations, which is
stable where Σx² − M·mean² cancels), and stored in the input's dtype.
"""
import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def _train_forward(x3, gamma, beta, eps, y3, mean, invstd, var_unbiased):
    N, C, inner = x3.shape
    count = N * inner
    for c in prange(C):
        total = 0.0
        for n in range(N):
            for i in range(inner):
                total += x3[n, c, i]
        mu = total / count
        squares = 0.0
        for n in range(N):
            for i in range(inner):
                d = x3[n, c, i] - mu
                squares += d * d
        inv = 1.0 / np.sqrt(squares / count + eps)
        mean[c] = mu
        invstd[c] = inv
        var_unbiased[c] = squares / (count - 1) if count > 1 else np.nan
        scale = gamma[c] * inv
        shift = beta[c] - mu * scale
        for n in range(N):
            for i in range(inner):
                y3[n, c, i] = x3[n, c, i] * scale + shift


def batch_norm_train_forward(x3, gamma, beta, eps):
    """x3 (N, C, inner), gamma/beta (C,) -> y3 (N, C, inner), mean, invstd, var_unbiased (C,). Needs N·inner ≥ 2."""
    C = x3.shape[1]
    y3 = np.empty_like(x3)
    mean, invstd, var_unbiased = (np.empty(C, x3.dtype) for _ in range(3))
    _train_forward(np.ascontiguousarray(x3), gamma, beta, float(eps), y3, mean, invstd, var_unbiased)
    return y3, mean, invstd, var_unbiased


@njit(cache=True, parallel=True)
def _eval_forward(x3, gamma, beta, running_mean, running_var, eps, y3):
    N, C, inner = x3.shape
    for c in prange(C):
        scale = gamma[c] / np.sqrt(running_var[c] + eps)
        shift = beta[c] - running_mean[c] * scale
        for n in range(N):
            for i in range(inner):
                y3[n, c, i] = x3[n, c, i] * scale + shift


def batch_norm_eval_forward(x3, gamma, beta, running_mean, running_var, eps):
    """y = γ (x − running_mean) / √(running_var + ε) + β, per channel; x3 (N, C, inner) -> y3 (N, C, inner)."""
    y3 = np.empty_like(x3)
    _eval_forward(np.ascontiguousarray(x3), gamma, beta, running_mean, running_var, float(eps), y3)
    return y3


@njit(cache=True, parallel=True)
def _channel_sums(dy3, x3, mean, invstd, dgamma, dbeta):
    """dβ_c = Σ dy and dγ_c = Σ dy · x̂ for every channel."""
    N, C, inner = x3.shape
    for c in prange(C):
        mu, inv = mean[c], invstd[c]
        sum_dy = 0.0
        sum_dy_xhat = 0.0
        for n in range(N):
            for i in range(inner):
                sum_dy += dy3[n, c, i]
                sum_dy_xhat += dy3[n, c, i] * (x3[n, c, i] - mu) * inv
        dbeta[c] = sum_dy
        dgamma[c] = sum_dy_xhat


@njit(cache=True, parallel=True)
def _input_grad(dy3, x3, gamma, mean, invstd, dgamma, dbeta, dx3):
    """dx = γ invstd · (dy − dβ / M − x̂ dγ / M)."""
    N, C, inner = x3.shape
    count = N * inner
    for c in prange(C):
        mu, inv = mean[c], invstd[c]
        scale = gamma[c] * inv
        mean_dy = dbeta[c] / count
        mean_dy_xhat = dgamma[c] / count
        for n in range(N):
            for i in range(inner):
                x_hat = (x3[n, c, i] - mu) * inv
                dx3[n, c, i] = scale * (dy3[n, c, i] - mean_dy - x_hat * mean_dy_xhat)


def batch_norm_backward(dy3, x3, gamma, mean, invstd, need_dx, need_dgamma, need_dbeta):
    """Training-mode gradients: dy3, x3 (N, C, inner); gamma, mean, invstd (C,) -> (dx3, dgamma, dbeta) or None."""
    dy3, x3 = np.ascontiguousarray(dy3), np.ascontiguousarray(x3)
    C = x3.shape[1]
    dgamma, dbeta = np.empty(C, x3.dtype), np.empty(C, x3.dtype)
    _channel_sums(dy3, x3, mean, invstd, dgamma, dbeta)  # dx needs both sums too
    dx3 = None
    if need_dx:
        dx3 = np.empty_like(x3)
        _input_grad(dy3, x3, gamma, mean, invstd, dgamma, dbeta, dx3)
    return dx3, (dgamma if need_dgamma else None), (dbeta if need_dbeta else None)


@njit(cache=True)
def _blend(running, batch_value, momentum):
    for c in range(running.shape[0]):
        running[c] = (1.0 - momentum) * running[c] + momentum * batch_value[c]


def update_running(running, batch_value, momentum):
    """In place: running = (1 − m) · running + m · batch_value (both (C,))."""
    _blend(running, batch_value, float(momentum))

"""NumPy reference of batch normalisation over x viewed as (N, C, inner), per channel c:

    mean_c = Σ x / M              var_c = Σ (x − mean_c)² / M          M = N · inner
    x̂ = (x − mean_c) / √(var_c + ε)          y = γ_c x̂ + β_c
    backward:  dβ = Σ dy     dγ = Σ dy x̂     dx = γ_c / √(var_c + ε) · (dy − dβ/M − x̂ dγ/M)
    running ← (1 − m) running + m batch      (the running variance takes the unbiased Σ (x − mean)² / (M − 1))
"""
import numpy as np


def _per_channel(v):
    return v.reshape(1, -1, 1)


def batch_norm_train_forward(x3, gamma, beta, eps):
    mean = x3.mean(axis=(0, 2))
    var = x3.var(axis=(0, 2))
    count = x3.shape[0] * x3.shape[2]
    invstd = 1.0 / np.sqrt(var + eps)
    y3 = (x3 - _per_channel(mean)) * _per_channel(invstd) * _per_channel(gamma) + _per_channel(beta)
    return y3, mean, invstd, var * count / (count - 1)


def batch_norm_eval_forward(x3, gamma, beta, running_mean, running_var, eps):
    x_hat = (x3 - _per_channel(running_mean)) / np.sqrt(_per_channel(running_var) + eps)
    return x_hat * _per_channel(gamma) + _per_channel(beta)


def batch_norm_backward(dy3, x3, gamma, mean, invstd, need_dx, need_dgamma, need_dbeta):
    """(dx3, dgamma, dbeta), None for what is not needed (the kernel contract's `need_*` flags)."""
    count = x3.shape[0] * x3.shape[2]
    x_hat = (x3 - _per_channel(mean)) * _per_channel(invstd)
    dbeta = dy3.sum(axis=(0, 2))
    dgamma = (dy3 * x_hat).sum(axis=(0, 2))
    dx3 = _per_channel(gamma * invstd) * (dy3 - _per_channel(dbeta) / count - x_hat * _per_channel(dgamma) / count)
    return tuple(g if need else None for g, need in zip((dx3, dgamma, dbeta), (need_dx, need_dgamma, need_dbeta)))


def update_running(running, batch_value, momentum):
    """running = (1 − momentum)·running + momentum·batch_value, in place (also returned)."""
    running[...] = (1 - momentum) * running + momentum * batch_value
    return running

"""NumPy reference of the optimizer updates, as PyTorch documents them (returns new arrays, t counts from 1).

SGD:   g = grad + λ θ
       b = g (first step)  or  b = μ b + (1 − τ) g            (only when μ ≠ 0)
       g = g + μ b (nesterov)  or  g = b
       θ = θ − η g
Adam:  g = grad + λ θ (Adam)   or   θ = θ − η λ θ (AdamW, decoupled)
       m = β₁ m + (1 − β₁) g         v = β₂ v + (1 − β₂) g²
       θ = θ − η · (m / (1 − β₁ᵗ)) / (√(v / (1 − β₂ᵗ)) + ε)
"""
import numpy as np


def sgd_step(param, grad, momentum_buf, lr, momentum, dampening, weight_decay, nesterov, first_step):
    g = grad + weight_decay * param
    if momentum != 0:
        momentum_buf = g.copy() if first_step else momentum * momentum_buf + (1 - dampening) * g
        g = g + momentum * momentum_buf if nesterov else momentum_buf
    return param - lr * g, momentum_buf


def adam_step(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step):
    if decoupled:
        param = param * (1 - lr * weight_decay)
        g = grad
    else:
        g = grad + weight_decay * param
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    m_hat = m / (1 - beta1 ** step)
    v_hat = v / (1 - beta2 ** step)
    return param - lr * m_hat / (np.sqrt(v_hat) + eps), m, v

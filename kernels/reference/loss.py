"""NumPy reference of the losses, written straight from their definitions (each returns the mean loss).

    BCE with logits:  l = w · [pw · t · softplus(−z) + (1 − t) · softplus(z)]      (= −w[pw t log σ(z) + (1−t) log(1−σ(z))])
    BCE:              l = −w · [t log p + (1 − t) log(1 − p)],  p clipped to [ε, 1 − ε]
    cross-entropy:    l = −Σ_pixels w[t] log softmax(x)[t] / Σ_pixels w[t]   (pixels whose t is ignore_index skipped)
    MSE:              l = mean (p − t)²
"""
import numpy as np


def softplus(z):
    return np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))


def sigmoid(z):
    return 0.5 * (1 + np.tanh(0.5 * z))


def bce_with_logits_forward(z, t, pos_weight, weight=None):
    pw = 1.0 if pos_weight is None else pos_weight
    w = 1.0 if weight is None else weight
    return np.mean(w * (pw * t * softplus(-z) + (1 - t) * softplus(z)))


def bce_with_logits_backward(z, t, pos_weight, g, weight=None):
    pw = 1.0 if pos_weight is None else pos_weight
    w = 1.0 if weight is None else weight
    s = sigmoid(z)
    return g / z.size * w * ((1 - t) * s - pw * t * (1 - s))


def bce_forward(p, t, eps, weight=None):
    w = 1.0 if weight is None else weight
    q = np.clip(p, eps, 1 - eps)
    return np.mean(-w * (t * np.log(q) + (1 - t) * np.log(1 - q)))


def bce_backward(p, t, eps, g, weight=None):
    w = 1.0 if weight is None else weight
    inside = (p > eps) & (p < 1 - eps)          # clipping passes no gradient
    return np.where(inside, g / p.size * w * ((1 - t) / (1 - p) - t / p), 0.0)


def log_softmax(x3):
    """Over axis 1 of (N, C, inner)."""
    shifted = x3 - x3.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def cross_entropy_forward(x3, target2, weight, ignore_index):
    N, C, inner = x3.shape
    w = np.ones(C) if weight is None else weight
    log_probs3 = log_softmax(x3)
    total, weight_sum = 0.0, 0.0
    for n in range(N):
        for i in range(inner):
            t = target2[n, i]
            if t == ignore_index:
                continue
            total -= w[t] * log_probs3[n, t, i]
            weight_sum += w[t]
    return total / weight_sum, log_probs3, weight_sum


def cross_entropy_backward(log_probs3, target2, weight, ignore_index, weight_sum, g):
    N, C, inner = log_probs3.shape
    w = np.ones(C) if weight is None else weight
    dx3 = np.zeros_like(log_probs3)
    for n in range(N):
        for i in range(inner):
            t = target2[n, i]
            if t == ignore_index:
                continue
            one_hot = np.arange(C) == t
            dx3[n, :, i] = g * w[t] / weight_sum * (np.exp(log_probs3[n, :, i]) - one_hot)
    return dx3


def mse_forward(p, t):
    return np.mean((p - t) ** 2)


def mse_backward(p, t, g):
    return 2 * g / p.size * (p - t)

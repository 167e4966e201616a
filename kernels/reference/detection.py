"""NumPy reference of the CenterNet-style sigmoid focal loss of a centre heat-map (Law & Deng, 2018; Zhou et
al., 2019), written straight from its definition.

z logits (any shape), t targets in [0, 1] of the same shape (Gaussian bumps, exactly 1 at each object's
centre), p = σ(z), α and β the focusing exponents (2 and 4 in the papers):

    positive element (t = 1):   l = −(1 − p)^α log p
    other elements:             l = −(1 − t)^β p^α log(1 − p)
    loss = Σ l / max(1, number of positive elements)

    dl/dz, positive:  α p (1 − p)^α log p − (1 − p)^(α+1)
    dl/dz, other:     (1 − t)^β [p^(α+1) − α p^α (1 − p) log(1 − p)]
with log p = −softplus(−z) and log(1 − p) = −softplus(z) (finite for any z).
"""
import numpy as np

from .loss import sigmoid, softplus


def _positive(t):
    return t >= 1.0


def focal_loss_forward(z, t, alpha, beta):
    p, positive = sigmoid(z), _positive(t)
    terms = np.where(positive, (1 - p) ** alpha * softplus(-z), (1 - t) ** beta * p ** alpha * softplus(z))
    return np.asarray(terms.sum() / max(1, int(positive.sum())), dtype=z.dtype)


def focal_loss_backward(z, t, alpha, beta, g):
    p, positive = sigmoid(z), _positive(t)
    log_p, log_not_p = -softplus(-z), -softplus(z)
    d_positive = alpha * p * (1 - p) ** alpha * log_p - (1 - p) ** (alpha + 1)
    d_other = (1 - t) ** beta * (p ** (alpha + 1) - alpha * p ** alpha * (1 - p) * log_not_p)
    return (g / max(1, int(positive.sum())) * np.where(positive, d_positive, d_other)).astype(z.dtype)

"""NumPy reference of inverted dropout: keep each element with probability 1 − p and scale it by 1/(1 − p).

    mask = [u ≥ p] / (1 − p),  u uniform in [0, 1) per element;   y = x · mask;   dx = dy · mask

The random numbers u are those of the kernels: u = splitmix64(seed + (i + 1)·γ) / 2⁶⁴ for the flat index i
(see kernels/cpu/dropout.py), written here with Python integers, so the reference makes the same mask.
"""
import numpy as np

_GAMMA = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1


def uniform(seed, i):
    """The kernels' uniform number in [0, 1) for element i under `seed` (splitmix64, 53 bits)."""
    z = (seed + (i + 1) * _GAMMA) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    z ^= z >> 31
    return (z >> 11) / 2.0 ** 53


def dropout_forward(x, p, seed):
    u = np.array([uniform(seed, i) for i in range(x.size)]).reshape(x.shape)
    scale = 1.0 / (1.0 - p) if p < 1 else 0.0
    mask = np.where(u >= p, scale, 0.0).astype(x.dtype)
    return x * mask, mask


def dropout_backward(dy, mask):
    return dy * mask

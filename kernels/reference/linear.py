"""NumPy reference of the dense layer: y[n, o] = Σᵢ x[n, i] W[o, i] + b[o], written as explicit sums."""
import numpy as np


def matmul(a, b):
    return np.einsum("ik,kj->ij", a, b)


def linear_forward(x, w, b):
    y = np.einsum("ni,oi->no", x, w)
    return y if b is None else y + b


def linear_backward(dy, x, w, need_dx, need_dw, need_db):
    """(dx, dw, db), None for what is not needed (the kernel contract's `need_*` flags)."""
    grads = np.einsum("no,oi->ni", dy, w), np.einsum("no,ni->oi", dy, x), dy.sum(0)
    return tuple(g if need else None for g, need in zip(grads, (need_dx, need_dw, need_db)))

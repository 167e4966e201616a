"""Gradient checking: autograd's backward against central finite differences, in float64.

`check_gradients(fn, arrays)` makes float64 tensors of `arrays`, computes L = Σ fn(*tensors) · R for a fixed
random R (so every output element matters, with a different weight), runs backward, and compares each
input's `.grad` with (L(x + h·eᵢ) − L(x − h·eᵢ)) / 2h, element by element.
"""
import contextlib

import numba
import numpy as np

import tinycnn


@contextlib.contextmanager
def one_thread():
    """Finite differences call an op hundreds of times on tiny arrays, where starting Numba's parallel
    threads costs more than the work (badly so on a busy machine): run them on one thread."""
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(previous)


def numerical_gradient(loss_of, arrays, index, h=1e-6):
    x = arrays[index]
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        up = loss_of(arrays)
        flat[i] = old - h
        down = loss_of(arrays)
        flat[i] = old
        gflat[i] = (up - down) / (2 * h)
    return grad


def check_gradients(fn, arrays, wrt=None, rtol=1e-5, atol=1e-6, seed=0):
    """Assert that autograd's gradients of fn wrt `arrays[i]` (i in wrt, default all) match finite differences."""
    with one_thread():
        _check_gradients(fn, arrays, wrt, rtol, atol, seed)


def _check_gradients(fn, arrays, wrt, rtol, atol, seed):
    arrays = [np.array(a, dtype=np.float64) for a in arrays]
    wrt = range(len(arrays)) if wrt is None else wrt
    out = fn(*[tinycnn.Tensor(a) for a in arrays])
    weights = np.random.default_rng(seed).standard_normal(out.shape)

    def loss_of(current):
        with tinycnn.no_grad():
            return float((fn(*[tinycnn.Tensor(a) for a in current]).numpy() * weights).sum())

    tensors = [tinycnn.Tensor(a, requires_grad=(i in wrt)) for i, a in enumerate(arrays)]
    out = fn(*tensors)
    (out * tinycnn.Tensor(weights)).sum().backward()
    for i in wrt:
        expected = numerical_gradient(loss_of, arrays, i)
        got = tensors[i].grad
        assert got is not None, f"input {i} received no gradient"
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol, err_msg=f"gradient of input {i}")

"""Softmax and log-softmax over any axis, as torch.nn.functional (dim=1 of (N, C, H, W): per pixel).

    softmax:      y_c = e^(x_c − m) / Σ_k e^(x_k − m)        m = max_k x_k
                  dx_c = y_c (dy_c − Σ_k dy_k y_k)
    log_softmax:  y_c = x_c − m − log Σ_k e^(x_k − m)
                  dx_c = dy_c − e^(y_c) Σ_k dy_k

The kernels work on a 3-D view (outer, C, inner) of the input, C being the softmax axis; for a
C-contiguous array that view is a free reshape, so one kernel serves every axis.
"""
import math
import numbers

from ..tensor import Function, Tensor


def _as_3d(shape, dim):
    """The (outer, C, inner) view of `shape` around axis `dim` (a 0-d shape counts as (1,))."""
    shape = shape or (1,)
    return (math.prod(shape[:dim]), shape[dim], math.prod(shape[dim + 1:]))


class Softmax(Function):
    def forward(self, x, dim):
        e = self.k.elementwise
        self.shape = tuple(x.shape)
        self.y3 = self.k.softmax.softmax_forward(e.reshape(x, _as_3d(self.shape, dim)))
        return e.reshape(self.y3, self.shape)

    def backward(self, dy):
        e = self.k.elementwise
        dx3 = self.k.softmax.softmax_backward(e.reshape(dy, self.y3.shape), self.y3)
        return e.reshape(dx3, self.shape)


class LogSoftmax(Function):
    def forward(self, x, dim):
        e = self.k.elementwise
        self.shape = tuple(x.shape)
        self.y3 = self.k.softmax.log_softmax_forward(e.reshape(x, _as_3d(self.shape, dim)))
        return e.reshape(self.y3, self.shape)

    def backward(self, dy):
        e = self.k.elementwise
        dx3 = self.k.softmax.log_softmax_backward(e.reshape(dy, self.y3.shape), self.y3)
        return e.reshape(dx3, self.shape)


def _normalise_dim(input, dim, op):
    if not isinstance(input, Tensor):
        raise TypeError(f"{op} expects a Tensor, got {type(input).__name__}")
    if input.dtype.kind != "f":
        raise TypeError(f"{op} expects a float tensor, got {input.dtype} (shape {input.shape})")
    if not isinstance(dim, numbers.Integral) or isinstance(dim, bool):
        raise TypeError(f"{op}: dim must be an int, got {dim!r}")
    ndim = max(input.ndim, 1)  # a 0-d tensor is treated as one element along dim 0 (or -1), as in PyTorch
    if not -ndim <= dim < ndim:
        raise ValueError(f"{op}: dim {dim} is out of range for an input of shape {input.shape}")
    return int(dim) % ndim


def softmax(input, dim=-1):
    """e^x normalised to sum to 1 along `dim` (numerically stable: the max is subtracted first)."""
    dim = _normalise_dim(input, dim, "softmax")
    return Softmax.apply(input, dim)


def log_softmax(input, dim=-1):
    """log(softmax(x)) along `dim`, computed as x − max − log Σ e^(x − max) (no log of a tiny number)."""
    dim = _normalise_dim(input, dim, "log_softmax")
    return LogSoftmax.apply(input, dim)

"""The NCHW conv algorithms, in the order they are tried: the first whose `applies` holds runs.

Each row of ALGORITHMS is an `Algorithm`: its name, `applies(x_shape, w_shape, y_shape, stride, padding,
groups, dilation)`, `forward(x, w, b, act, stride, padding, dilation, groups, y) -> y` (y = act(conv + b)
written into the given output), `backward(dy, y, x, x_shape, w, w_shape, stride, padding, dilation, groups,
need_dx, need_dw, need_db) -> (dx, dw, db)` (y: the output of a fused conv + bias + ReLU, whose mask
[y > 0] multiplies dy, or None), and optionally `forward_maxpool2(x, w, b, act, stride, padding, dilation,
y_shape, pooled) -> pooled` (the 2×2 max pooling taken as the output is made; without it the conv runs and
then the pooling kernel). `padding` is (top, left) here: the public functions (__init__.py) take either form
of the contract's and work out the output's size (geometry.py).

`reads_parts`: the algorithm takes x as a list, the parts of a channel concatenation (conv2d_concat_forward,
a U-Net's decoder conv on [upsampled, skip]), without the concatenation being built: Winograd's input
transform writes each part's channels of its tiles. For the others, convolve and convolve_backward build the
concatenation (and split dx into the parts' gradients).
"""
from typing import Callable, NamedTuple, Optional

import numpy as np

from ..workspace import output
from . import direct, few_channels, im2col, pointwise, winograd
from .geometry import _geometry


class Algorithm(NamedTuple):
    name: str
    applies: Callable
    forward: Callable
    backward: Callable
    forward_maxpool2: Optional[Callable] = None
    reads_parts: bool = False


ALGORITHMS = (
    Algorithm("few_channels", few_channels.applies, few_channels.forward, few_channels.backward,
              few_channels.forward_maxpool2),
    Algorithm("direct", direct.applies, direct.forward, direct.backward, direct.forward_maxpool2),
    Algorithm("matmul", pointwise.applies, pointwise.forward, pointwise.backward),
    Algorithm("winograd", winograd.applies, winograd.forward, winograd.backward, winograd.forward_maxpool2,
              reads_parts=True),
    Algorithm("im2col", im2col.applies, im2col.forward, im2col.backward),
)


def choose(x_shape, w_shape, y_shape, stride, padding, groups, dilation):
    """The first algorithm of ALGORITHMS that applies to these shapes (im2col applies to all)."""
    for algorithm in ALGORITHMS:
        if algorithm.applies(x_shape, w_shape, y_shape, stride, padding, groups, dilation):
            return algorithm
    raise AssertionError("im2col applies to every convolution")


def convolve(x, w, b, act, stride, padding, dilation, groups, y_shape=None):
    """y = act(conv2d(x, w) + b), act a code of FUSED_CODES (0: none); b may be None; x an array, or a list of
    the parts of a channel concatenation. Without y_shape, padding is either form of the contract's; with it,
    the (top, left) padding."""
    x_shape = _shape(x)
    if y_shape is None:
        padding, y_shape = _geometry(x_shape, w.shape, stride, padding, dilation)
    y = output(y_shape, (x[0] if isinstance(x, list) else x).dtype)
    algorithm = choose(x_shape, w.shape, y_shape, stride, padding, groups, dilation)
    if isinstance(x, list) and not algorithm.reads_parts:
        x = np.concatenate(x, axis=1)
    return algorithm.forward(x, w, b, act, stride, padding, dilation, groups, y)


def convolve_backward(dy, y, x, x_shape, w, w_shape, stride, padding, dilation, groups, need_dx, need_dw, need_db):
    """Gradients of conv2d (x of shape x_shape, weights of shape w_shape) given dy, or, when y (the output of
    a fused conv + bias + ReLU) is given, given dz = dy · [y > 0]. x is needed only for dw, w only for dx;
    padding (top, left). Returns (dx, dw, db), None for what is not needed; x may be a list of the parts of a
    channel concatenation (x_shape the whole's), dx is then a list of their gradients."""
    algorithm = choose(x_shape, w_shape, dy.shape, stride, padding, groups, dilation)
    if not isinstance(x, list) or algorithm.reads_parts:
        return algorithm.backward(dy, y, x, x_shape, w, w_shape, stride, padding, dilation, groups,
                                  need_dx, need_dw, need_db)
    dx, dw, db = algorithm.backward(dy, y, np.concatenate(x, axis=1), x_shape, w, w_shape, stride, padding,
                                    dilation, groups, need_dx, need_dw, need_db)
    if dx is not None:  # each part's channels, as arrays of their own
        firsts = np.cumsum([0] + [part.shape[1] for part in x])
        dx = [np.ascontiguousarray(dx[:, c0:c1]) for c0, c1 in zip(firsts[:-1], firsts[1:])]
    return dx, dw, db


def _shape(x):
    """x's shape, or that of the channel concatenation of the list x."""
    if not isinstance(x, list):
        return x.shape
    N, _, H, W = x[0].shape
    return (N, sum(part.shape[1] for part in x), H, W)

"""Direct NCHW convolution for a 3×3, stride-1 first layer (C ≤ FEW_CHANNELS input channels, no groups: a
grey image, or grey and alpha; from 3 channels on, an RGB image, Winograd's tiles are faster).

im2col would copy the image nine times into a (C·9, H·W) matrix to feed a GEMM whose inner dimension is
only C·9 = 27 and whose rows are the few filters: OpenBLAS runs such a thin product far below its peak,
and the copy costs as much again. Here each filter's output plane is made in one buffer, on the wide
stride-1 grid of direct.py (the plane padded and flattened, so each of the nine kernel offsets is one
shifted view of it):

    wide[q] = b[f] + Σ_c Σ_{i, j < 3} w[f, c, i, j] · padded_c[q + i·Wp + j]       q = oh·Wp + ow

one pass per input channel with its nine weights in registers, then the plane's rows go to y through the
activation (or its 2×2 max pooling, forward_maxpool2). Parallel over the output planes (n, f); a call pads
the image it is on once (all C channels) and keeps it for the filters that follow. The backward is
direct.py's for one channel (its weight gradient reads dy once), else im2col's (its GEMMs have the
batch's pixels as their long side).
"""
import numpy as np
from numba import njit

from .. import threads
from ..activation import fused_activate
from . import direct, im2col
from .epilogue import _bias_or_zeros

FEW_CHANNELS = 2


def applies(x_shape, w_shape, y_shape, stride, padding, groups, dilation):
    """3×3, stride 1, no dilation or groups, at most FEW_CHANNELS input channels."""
    F, Cg, KH, KW = w_shape
    return ((KH, KW) == (3, 3) and stride == dilation == (1, 1) and groups == 1 and Cg <= FEW_CHANNELS)


def forward(x, w, b, act, stride, padding, dilation, groups, y):
    """y = act(conv2d(x, w) + b) into y (N, F, OH, OW); padding (top, left)."""
    return _forward(x, w, b, act, padding, y, y.shape[2:], False)


def forward_maxpool2(x, w, b, act, stride, padding, dilation, y_shape, pooled):
    """pooled = max_pool2d(act(conv2d(x, w) + b), 2), taken from each plane's wide buffer."""
    return _forward(x, w, b, act, padding, pooled, (2 * pooled.shape[2], 2 * pooled.shape[3]), True)


def backward(dy, y, x, x_shape, w, w_shape, stride, padding, dilation, groups, need_dx, need_dw, need_db):
    """direct.py's gradients for one input channel, im2col's for more (see the module docstring)."""
    algorithm = direct if w_shape[1] == 1 else im2col
    return algorithm.backward(dy, y, x, x_shape, w, w_shape, stride, padding, dilation, groups,
                              need_dx, need_dw, need_db)


def _forward(x, w, b, act, padding, y, out_size, pooled):
    """The planes of y (the conv's output of out_size = (OH, OW), or its pooling) spread over the threads."""
    b = _bias_or_zeros(b, w.shape[0], x.dtype)
    (N, C, H, W), (ph, pw), (OH, OW) = x.shape, padding, out_size
    Hp, Wp = max(H + 2 * ph, OH + 2), max(W + 2 * pw, OW + 2)

    def planes(p0, p1):  # each piece pads the images it starts on, in buffers of its own
        padded = np.zeros((C, Hp * Wp), x.dtype)  # the border stays 0: only the inside is copied
        wide = np.empty(OH * Wp - 2, y.dtype)     # the last row's two extra columns are never read
        _few_channel_forward(x, w, b, act, ph, pw, Wp, OH, OW, pooled, padded, wide, y, p0, p1)

    threads.parallel_range(planes, y.shape[0] * y.shape[1], pieces_per_thread=2)
    return y


@njit(cache=True, nogil=True, fastmath={"contract"})
def _few_channel_forward(x, w, b, act, ph, pw, Wp, OH, OW, pooled, padded, wide, y, p0, p1):
    """x (N, C, H, W), w (F, C, 3, 3) -> y (N, F, OH, OW) = act(conv2d(x, w) + b) for the output planes
    n·F + f in [p0, p1), with ph rows and pw columns of zeros before the image (and as many as the outputs
    read after it, rows of Wp); or, pooled, y (N, F, OH // 2, OW // 2) = its 2×2 max pooling. padded
    (C, Hp·Wp) holds the padded image (its border 0), wide the output plane (made by the caller: an array
    made in the kernel costs its first compile ~0.2 s more)."""
    N, C, H, W = x.shape
    F = w.shape[0]
    image = -1
    for plane in range(p0, p1):
        n, f = plane // F, plane % F
        if n != image:
            for c in range(C):
                for h in range(H):
                    start = (h + ph) * Wp + pw
                    for k in range(W):
                        padded[c, start + k] = x[n, c, h, k]
            image = n
        for k in range(wide.size):
            wide[k] = b[f]
        for c in range(C):
            _add_conv3x3(wide, padded[c], w[f, c], Wp)
        if pooled:  # act(max) = max(act): the activation is monotone
            for oh in range(OH // 2):
                out, top, bottom = y[n, f, oh], wide[2 * oh * Wp:], wide[(2 * oh + 1) * Wp:]
                for k in range(OW // 2):
                    v = max(max(top[2 * k], top[2 * k + 1]), max(bottom[2 * k], bottom[2 * k + 1]))
                    out[k] = fused_activate(v, act)
        else:
            for oh in range(OH):
                out, row = y[n, f, oh], wide[oh * Wp:]
                for k in range(OW):
                    out[k] = fused_activate(row[k], act)


@njit(cache=True, fastmath={"contract"})
def _add_conv3x3(out, src, w, row):
    """out[k] += Σ_{i, j < 3} w[i, j] · src[k + i·row + j], in one pass (the nine weights in registers)."""
    w00, w01, w02 = w[0, 0], w[0, 1], w[0, 2]
    w10, w11, w12 = w[1, 0], w[1, 1], w[1, 2]
    w20, w21, w22 = w[2, 0], w[2, 1], w[2, 2]
    s00, s01, s02 = src, src[1:], src[2:]
    s10, s11, s12 = src[row:], src[row + 1:], src[row + 2:]
    s20, s21, s22 = src[2 * row:], src[2 * row + 1:], src[2 * row + 2:]
    for k in range(out.size):
        out[k] += (w00 * s00[k] + w01 * s01[k] + w02 * s02[k]
                   + w10 * s10[k] + w11 * s11[k] + w12 * s12[k]
                   + w20 * s20[k] + w21 * s21[k] + w22 * s22[k])

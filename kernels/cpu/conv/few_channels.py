"""Direct NCHW convolution for a 3×3, stride-1 first layer (C ≤ FEW_CHANNELS input channels, no groups: a
grey image, or grey and alpha; from 3 channels on, an RGB image, Winograd's tiles are faster forward), and
the weight gradient of such layers up to RGB (and alpha).

im2col would copy the image nine times into a (C·9, H·W) matrix to feed a GEMM whose inner dimension is
only C·9 = 27 and whose rows are the few filters: OpenBLAS runs such a thin product far below its peak,
and the copy costs as much again. Here each filter's output plane is made in one buffer, on the wide
stride-1 grid of direct.py (the plane padded and flattened, so each of the nine kernel offsets is one
shifted view of it):

    wide[q] = b[f] + Σ_c Σ_{i, j < 3} w[f, c, i, j] · padded_c[q + i·Wp + j]       q = oh·Wp + ow

one pass per input channel with its nine weights in registers, then the plane's rows go to y through the
activation (or its 2×2 max pooling, forward_maxpool2). Parallel over the output planes (n, f); a call pads
the image it is on once (all C channels) and keeps it for the filters that follow.

The backward of a first layer (dw without dx) is `weight_grad`, for up to WEIGHT_GRAD_CHANNELS input
channels (winograd.py hands RGB first layers here too: its transforms and 36 GEMMs with 3 channels took
twice as long):

    dw[f, c, i, j] = Σ_n Σ_q dz_f[q] · padded_c[q + i·Wp + j]       (dz spread onto the same wide grid)

nine dot products per (filter, channel) in one pass over the plane, two filters a pass, so that each
shifted input value loaded serves both (timings: benchmarks/RESULTS.md, "Timings moved from kernel
docstrings"). With dx, the backward is direct.py's for one channel, else im2col's (its GEMMs have the
batch's pixels as their long side).
"""
import numpy as np
from numba import njit

from .. import threads
from ..activation import fused_activate
from . import direct, im2col
from .direct import _add_3x3
from .epilogue import _bias_or_zeros

FEW_CHANNELS = 2
WEIGHT_GRAD_CHANNELS = 4  # weight_grad: for a first layer of up to this many input channels (winograd.py's too)


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
    """dw (and db) without dx (a first layer, whose input needs no gradient): weight_grad. With dx: direct.py's
    gradients for one input channel, im2col's for more (see the module docstring)."""
    if need_dw and not need_dx:
        return (None, *weight_grad(dy, y, x, w_shape, padding, need_db))
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


def weight_grad(dy, y, x, w_shape, padding, need_db):
    """dw (and db) of a 3×3 stride-1 conv with few input channels (a first layer, whose input needs no
    gradient), dz = dy · [y > 0] when y is given: (dw, db or None)."""
    N, C, H, W = x.shape
    F = w_shape[0]
    (ph, pw), (OH, OW) = padding, dy.shape[2:]
    Hp, Wp = max(H + 2 * ph, OH + 2), max(W + 2 * pw, OW + 2)
    padded = np.zeros((N, C, Hp, Wp), x.dtype)  # the images padded once (each plane flattened: rows of Wp)
    padded[:, :, ph:ph + H, pw:pw + W] = x
    padded = padded.reshape(N, C, Hp * Wp)
    dw = np.empty(w_shape, dy.dtype)
    bias_sums = np.zeros(F)
    masked = y is not None
    y_or_dy, zero = y if masked else dy, dy.dtype.type(0)

    def filters(f0, f1):  # buffers of each piece's own, made here (arrays made in the kernel cost its first
        # compile more)
        wide_a, wide_b = np.zeros(OH * Wp, dy.dtype), np.zeros(OH * Wp, dy.dtype)
        totals = np.zeros((f1 - f0 + 1, C, 3, 3))  # one spare row: an odd last filter's partner
        _few_channel_weight_grad(dy, y_or_dy, masked, padded, Wp, wide_a, wide_b, totals, bias_sums, zero, f0, f1)
        dw[f0:f1] = totals[:f1 - f0]

    threads.parallel_range(filters, F, pieces_per_thread=1)
    return dw, (bias_sums.astype(dy.dtype) if need_db else None)


@njit(cache=True, nogil=True)
def _few_channel_weight_grad(dy, y, masked, padded, Wp, wide_a, wide_b, totals, bias_sums, zero, f0, f1):
    """totals[f − f0, c, i, j] = Σ_{n, oh, ow} dz[n, f, oh, ow] · padded[n, c, (oh + i)·Wp + ow + j] and
    bias_sums[f] = Σ dz[n, f] for the filters f in [f0, f1) (totals and bias_sums zeros; padded: the images with
    their zero border, each plane flattened in rows of Wp), the filters two at a time: each one's dz spread onto
    the wide grid (wide_a, wide_b: rows of Wp, as direct.py's), and the eighteen dot products of the pair with
    each padded plane in one pass (_dots3x3_pair: each shifted input value read once for both)."""
    N, C = padded.shape[0], padded.shape[1]
    L = dy.shape[2] * Wp - 2
    for n in range(N):
        for f in range(f0, f1, 2):
            bias_sums[f] += _spread(wide_a, dy[n, f], y[n, f], masked, Wp)
            if f + 1 < f1:
                bias_sums[f + 1] += _spread(wide_b, dy[n, f + 1], y[n, f + 1], masked, Wp)
            for c in range(C):  # an odd last filter: paired with itself, the second sums go to the spare row
                _dots3x3_pair(totals[f - f0, c], totals[f - f0 + 1, c], wide_a[:L], (wide_b if f + 1 < f1 else wide_a)[:L],
                              padded[n, c], Wp, zero)


@njit(cache=True, fastmath={"reassoc"})
def _spread(wide, dy_plane, y_plane, masked, Wp):
    """wide[oh·Wp + ow] = dz[oh, ow], dz = dy · [y > 0] when masked, else dy; returns Σ dz (float64). (direct.py's
    _fill_wide does this for any stride, and its first compile took 0.3 s more.)"""
    OH, OW = dy_plane.shape
    total = 0.0
    for oh in range(OH):
        row, dy_row, y_row = wide[oh * Wp:oh * Wp + OW], dy_plane[oh], y_plane[oh]
        for k in range(OW):
            v = dy_row[k] if not masked or y_row[k] > 0 else dy_row[k] * 0
            row[k] = v
            total += v
    return total


@njit(cache=True, fastmath={"reassoc", "contract"})
def _dots3x3_pair(total_a, total_b, dz_a, dz_b, src, row, zero):
    """total_a[i, j] += Σ_k dz_a[k] · src[k + i·row + j], and total_b the same with dz_b, in one pass: each
    shifted value of src loaded once for both (direct.py's _wide_dots3x3 loads it once a filter; eighteen
    accumulators in the data's dtype, their sums into the totals in float64)."""
    s00, s01, s02 = src, src[1:], src[2:]
    s10, s11, s12 = src[row:], src[row + 1:], src[row + 2:]
    s20, s21, s22 = src[2 * row:], src[2 * row + 1:], src[2 * row + 2:]
    a00 = a01 = a02 = a10 = a11 = a12 = a20 = a21 = a22 = zero
    b00 = b01 = b02 = b10 = b11 = b12 = b20 = b21 = b22 = zero
    for k in range(dz_a.size):
        d, e = dz_a[k], dz_b[k]
        v = s00[k]
        a00 += d * v
        b00 += e * v
        v = s01[k]
        a01 += d * v
        b01 += e * v
        v = s02[k]
        a02 += d * v
        b02 += e * v
        v = s10[k]
        a10 += d * v
        b10 += e * v
        v = s11[k]
        a11 += d * v
        b11 += e * v
        v = s12[k]
        a12 += d * v
        b12 += e * v
        v = s20[k]
        a20 += d * v
        b20 += e * v
        v = s21[k]
        a21 += d * v
        b21 += e * v
        v = s22[k]
        a22 += d * v
        b22 += e * v
    _add_3x3(total_a, a00, a01, a02, a10, a11, a12, a20, a21, a22)
    _add_3x3(total_b, b00, b01, b02, b10, b11, b12, b20, b21, b22)

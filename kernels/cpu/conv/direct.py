"""Direct NCHW convolution for one input channel per filter (C/G = 1: depthwise convs with G = C, and a first
layer on a grey image, C = 1; few_channels.py takes that layer's 3×3 stride-1 forward, this file's backward
does its gradients).

Each filter reads a single plane, so im2col would copy the input KH·KW times to feed a GEMM with an inner
dimension of KH·KW. Such a conv is memory bound (9 multiply-adds per output for a 3×3), so the kernels make
one pass over each big array: the forward builds each output plane in a buffer of its thread (bias, the
KH·KW shifted planes, the activation) and writes it once; the weight gradient reads dy (and the ReLU mask)
once, and correlates each plane with the input plane. Parallel over output planes (forward), over input
planes (dx) and over filters (dw), each thread writing only its own: the kernels are serial and release the
GIL, each call takes a range of planes, and the threads of kernels/cpu/threads.py run them on their own
ranges (a `prange` loop would cost each kernel about a second more to compile on an empty cache). The
forward's per-plane helpers are inlined into it (`inline="always"`, Numba's own inlining): not compiled once
more on their own, they cost less to compile, and the forward kept the speed it had as a `prange` loop
(called, they ran slower; inlining the pooling row or the backward's helpers made those slower:
benchmarks/RESULTS.md, "Cold start").
"""
import numpy as np
from numba import njit

from .. import threads
from ..activation import fused_activate
from ..workspace import scratch
from .epilogue import _bias_grad, _bias_or_zeros, _gradient_buffers, _relu_grad_planes
from .rows import _add_scaled_row, _copy_row, _dot_row, _relu_grad_row


def applies(x_shape, w_shape, y_shape, stride, padding, groups, dilation):
    """One input channel per filter."""
    return w_shape[1] == 1


def forward(x, w, b, act, stride, padding, dilation, groups, y):
    """y = act(conv2d(x, w) + b) into y (N, F, OH, OW), the bias and activation in the row loop; padding (top, left)."""
    b = _bias_or_zeros(b, w.shape[0], x.dtype)
    threads.parallel_range(lambda p0, p1: _direct_forward(x, w, b, act, stride, padding, dilation, y, False, p0, p1),
                           y.shape[0] * y.shape[1])
    return y


def forward_maxpool2(x, w, b, act, stride, padding, dilation, y_shape, pooled):
    """pooled = max_pool2d(act(conv2d(x, w) + b), 2), taken from each plane's wide buffer."""
    b = _bias_or_zeros(b, w.shape[0], x.dtype)
    threads.parallel_range(lambda p0, p1: _direct_forward(x, w, b, act, stride, padding, dilation, pooled, True, p0,
                                                          p1), pooled.shape[0] * pooled.shape[1])
    return pooled


def backward(dy, y, x, x_shape, w, w_shape, stride, padding, dilation, groups, need_dx, need_dw, need_db):
    """conv2d's gradients (dz = dy · [y > 0] when y is given) -> (dx, dw, db), None for what is not needed."""
    dtype = dy.dtype
    dx, dw, bias_sums = _gradient_buffers(dy, x_shape, w_shape, need_dx, need_dw)
    masked = y is not None
    if need_dw:  # dw and the bias sums in one pass over dy (and y)
        y_or_dy, zero = y if masked else dy, dtype.type(0)
        threads.parallel_range(lambda f0, f1: _direct_weight_grad(dy, y_or_dy, masked, x, stride, padding, dilation,
                                                                  dw, bias_sums[0], zero, f0, f1), w_shape[0])
        db = bias_sums[0].astype(dtype) if need_db else None
    else:
        db = _bias_grad(dy, y, bias_sums) if need_db else None
    if need_dx:
        dz = dy
        if masked:
            dz = scratch("conv.dz", dy.shape, dtype)
            planes = dy.shape[0], dy.shape[1], -1  # (N, F, OH·OW)
            _relu_grad_planes(dy.reshape(planes), y.reshape(planes), dz.reshape(planes), bias_sums)
        threads.parallel_range(lambda p0, p1: _direct_input_grad(dz, w, stride, padding, dilation, dx, p0, p1),
                               x_shape[0] * x_shape[1])
    return dx, dw, db


# ---------------------------------------------------------------------- direct: one input channel per filter
#
# The direct kernels work on the **wide stride-1 grid**. With the input plane padded to (Hp, Wp) and flattened,
# output pixel (oh, ow) of a stride-1 conv reads, for kernel offset (i, j), input pixel
# (oh + i·dil_h)·Wp + (ow + j·dil_w) = q + off(i, j), with q = oh·Wp + ow and off(i, j) = i·dil_h·Wp + j·dil_w.
# So if the output plane is computed "wide", as if it had Wp columns (q running over all of them), each
# kernel offset is ONE contiguous multiply-add of length L = OH1·Wp − (KW − 1)·dil_w over the whole plane,
# instead of OH short rows: a 98-pixel row is too short for the SIMD loop's unrolled body (a third of it
# ran in the scalar remainder loop), a 9,604-pixel plane is not. The (KW − 1)·dil_w extra columns per row are
# computed and dropped (2 % of the work for the tutorial). A strided conv is the stride-1 conv sampled
# every (sh, sw) pixels: the kernels compute the stride-1 grid and read (forward) or fill (backward) only
# the sampled pixels — sh·sw times the multiply-adds, but in SIMD code, and these convs are cheap.

@njit(cache=True, inline="always")
def _padded_plane(x_plane, ph, pw, Wp, buf):
    """The (H, W) plane with ph rows and pw columns of zeros before it, in rows of Wp, flattened: the plane
    itself when buf is empty (no padding), else copied into buf (whose border the caller zeroed once)."""
    H, W = x_plane.shape
    if buf.size == 0:
        return x_plane.reshape(H * W)
    for h in range(H):  # a loop, not a slice assignment: for an array slice assignment Numba compiles a
        # formatted shape-mismatch error, seconds on an empty cache (and these shapes always match)
        _copy_row(buf[(h + ph) * Wp + pw:(h + ph) * Wp + pw + W], x_plane[h], 1)
    return buf


@njit(cache=True)
def _padded_extent(size, pad, out_size, kernel, stride, dilation):
    """The padded plane's extent along one axis: the input with `pad` zeros before and after it, or more
    after it where the outputs read further (an uneven padding, given as the top/left pad and the output
    size: Keras' 'same' with stride 2 pads only the bottom and right)."""
    return max(size + 2 * pad, (out_size - 1) * stride + (kernel - 1) * dilation + 1)


@njit(cache=True, fastmath={"reassoc", "contract"})
def _fill_wide(wide, dy_plane, y_plane, masked, sh, sw, Wp):
    """Put dz = dy · [y > 0] (or dy when not masked) at its pixels of the stride-1 wide grid,
    wide[oh·sh·Wp + ow·sw] = dz[oh, ow] (the other pixels keep their zeros); returns Σ dz in float64."""
    OH, OW = dy_plane.shape
    total = 0.0
    for oh in range(OH):
        total += _relu_grad_row(wide[oh * sh * Wp:], dy_plane[oh], y_plane[oh], masked, sw)
    return total


@njit(cache=True, fastmath={"contract"})
def _wide_conv3x3(out, src, w, bias, row, col):
    """out[k] = bias + Σ_{i, j < 3} w[i, j] · src[k + i·row + j·col], for the whole wide plane in one pass.

    The 3×3 case written out: the nine weights stay in registers and each output is stored once, where a
    loop over the kernel offsets loads and stores the whole plane nine times (timings: benchmarks/RESULTS.md,
    "Timings moved from kernel docstrings")."""
    w00, w01, w02 = w[0, 0], w[0, 1], w[0, 2]
    w10, w11, w12 = w[1, 0], w[1, 1], w[1, 2]
    w20, w21, w22 = w[2, 0], w[2, 1], w[2, 2]
    # the nine shifted views of the input (indexing them with k alone keeps the loop free of index tests)
    s00, s01, s02 = src, src[col:], src[2 * col:]
    s10, s11, s12 = src[row:], src[row + col:], src[row + 2 * col:]
    s20, s21, s22 = src[2 * row:], src[2 * row + col:], src[2 * row + 2 * col:]
    for k in range(out.size):
        out[k] = (bias + w00 * s00[k] + w01 * s01[k] + w02 * s02[k]
                  + w10 * s10[k] + w11 * s11[k] + w12 * s12[k]
                  + w20 * s20[k] + w21 * s21[k] + w22 * s22[k])


@njit(cache=True, fastmath={"reassoc", "contract"})
def _wide_dots3x3(total, dz, src, row, col, zero):
    """total[i, j] += Σ_k dz[k] · src[k + i·row + j·col] for the nine offsets of a 3×3 kernel, in one pass
    over dz (nine accumulators in the data's dtype, `zero`; their sums into total, float64)."""
    s00, s01, s02 = src, src[col:], src[2 * col:]
    s10, s11, s12 = src[row:], src[row + col:], src[row + 2 * col:]
    s20, s21, s22 = src[2 * row:], src[2 * row + col:], src[2 * row + 2 * col:]
    a00 = a01 = a02 = a10 = a11 = a12 = a20 = a21 = a22 = zero
    for k in range(dz.size):
        d = dz[k]
        a00 += d * s00[k]
        a01 += d * s01[k]
        a02 += d * s02[k]
        a10 += d * s10[k]
        a11 += d * s11[k]
        a12 += d * s12[k]
        a20 += d * s20[k]
        a21 += d * s21[k]
        a22 += d * s22[k]
    _add_3x3(total, a00, a01, a02, a10, a11, a12, a20, a21, a22)


@njit(cache=True, nogil=True)
def _direct_forward(x, w, b, act, stride, padding, dilation, y, pooled, p0, p1):
    """x (N, C, H, W), w (F, 1, KH, KW), F = m·C -> y (N, F, OH, OW): filter f reads only channel f // m,

      y[n, f, oh, ow] = b[f] + Σ_{i, j} w[f, 0, i, j] · x[n, f // m, oh·sh + i·dil_h − ph, ow·sw + j·dil_w − pw]

    through the activation `act` (a FUSED_CODES code), for the output planes n·F + f in [p0, p1). Each plane
    is built on the wide grid in a buffer of this call (the bias, then one multiply-add per kernel offset),
    then its pixels are written to y once, through the activation. With pooled, y (N, F, OH // 2, OW // 2)
    gets the 2×2 max pooling of that output instead, taken from the same buffer. `pooled` is a runtime flag,
    not a default argument (a specialisation of its own): a model's first predict runs both forms (its build
    forward, then its plan's fused pooling), and one compile of both costs less than two."""
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    OH, OW = (y.shape[2], y.shape[3]) if not pooled else (2 * y.shape[2], 2 * y.shape[3])
    (sh, sw), (ph, pw), (dil_h, dil_w) = stride, padding, dilation
    Hp, Wp = _padded_extent(H, ph, OH, KH, sh, dil_h), _padded_extent(W, pw, OW, KW, sw, dil_w)
    L = (Hp - (KH - 1) * dil_h) * Wp - (KW - 1) * dil_w
    m = F // C
    buf = np.zeros(Hp * Wp if Hp * Wp != H * W else 0, x.dtype)  # its border stays 0: the inside is copied
    wide = np.empty(L, y.dtype)
    for plane in range(p0, p1):
        _direct_forward_plane(x, w, b, act, plane, stride, padding, dilation, y, pooled, buf, wide, Wp, OH, m)


@njit(cache=True, inline="always")
def _direct_forward_plane(x, w, b, act, plane, stride, padding, dilation, y, pooled, buf, wide, Wp, OH, m):
    """One output plane of _direct_forward, in its call's buffers."""
    F, _, KH, KW = w.shape
    (sh, sw), (ph, pw), (dil_h, dil_w) = stride, padding, dilation
    n, f = plane // F, plane % F
    src = _padded_plane(x[n, f // m], ph, pw, Wp, buf)
    if KH == 3 and KW == 3:
        _wide_conv3x3(wide, src, w[f, 0], b[f], dil_h * Wp, dil_w)
    else:  # one multiply-add over the plane per kernel offset
        wide[:] = b[f]
        for i in range(KH):
            for j in range(KW):
                _add_scaled_row(wide, w[f, 0, i, j], src[i * dil_h * Wp + j * dil_w:], 1)
    if pooled:
        for ph_ in range(OH // 2):
            _pool_out_row(y[n, f, ph_], wide[2 * ph_ * sh * Wp:], wide[(2 * ph_ + 1) * sh * Wp:], sw, act)
    else:
        for oh in range(OH):
            _copy_out_row(y[n, f, oh], wide[oh * sh * Wp:], sw, act)


@njit(cache=True)
def _pool_out_row(out, wide0, wide1, step, act):
    """out[k] = max of the output pixels (2k, 2k + 1) of the two wide rows, through the activation."""
    for k in range(out.size):
        v = max(max(wide0[2 * k * step], wide0[(2 * k + 1) * step]), max(wide1[2 * k * step], wide1[(2 * k + 1) * step]))
        out[k] = fused_activate(v, act)


@njit(cache=True, inline="always")
def _copy_out_row(out, wide, step, act):
    """out[k] = act(wide[k·step]) (act: a FUSED_CODES code; NaN passes through)."""
    if step != 1:  # the strided copy first, then the activation in a unit-stride loop, which vectorizes
        for k in range(out.size):  # (both in one strided loop: the activation ran scalar, several times
            out[k] = wide[k * step]  # the copy's time; see benchmarks/RESULTS.md, timings moved from here)
        if act:
            for k in range(out.size):
                out[k] = fused_activate(out[k], act)
    elif act:
        for k in range(out.size):
            out[k] = fused_activate(wide[k], act)
    else:
        for k in range(out.size):
            out[k] = wide[k]


@njit(cache=True, nogil=True)
def _direct_input_grad(dy, w, stride, padding, dilation, dx, p0, p1):
    """dx[n, c, ih, iw] = Σ w[f, 0, i, j] · dy[n, f, oh, ow] over the m filters f that read channel c and
    the (i, j, oh, ow) that met (ih, iw) (dx is overwritten), for the input planes n·C + c in [p0, p1)
    (parallel over the planes: each thread owns its own). On the wide grids: dy's plane is spread onto the
    stride-1 grid, each kernel offset adds w·(that grid) into the padded input plane, whose interior is then
    dx's plane."""
    N, C, H, W = dx.shape
    F, _, KH, KW = w.shape
    (sh, sw), (ph, pw), (dil_h, dil_w) = stride, padding, dilation
    Hp = _padded_extent(H, ph, dy.shape[2], KH, sh, dil_h)
    Wp = _padded_extent(W, pw, dy.shape[3], KW, sw, dil_w)
    L = (Hp - (KH - 1) * dil_h) * Wp - (KW - 1) * dil_w
    m = F // C
    # wide dz, with a margin of zeros in front (see the plane's 3×3 case); the pixels no output samples stay 0
    margin = (KH - 1) * dil_h * Wp + (KW - 1) * dil_w
    dzw = np.zeros(Hp * Wp + 2 * margin, dx.dtype)
    dxp = np.empty(Hp * Wp, dx.dtype)  # the padded input plane's gradient
    for plane in range(p0, p1):
        _direct_input_grad_plane(dy, w, plane, stride, padding, dilation, dx, dzw, dxp, Wp, L, m, margin)


@njit(cache=True)
def _direct_input_grad_plane(dy, w, plane, stride, padding, dilation, dx, dzw, dxp, Wp, L, m, margin):
    """One input plane of _direct_input_grad, in its call's buffers; dz's wide grid sits at
    dzw[margin:]. A 3×3 kernel with one filter per channel gathers instead of scattering: dxp[q] =
    Σ_{i,j} w[i, j] · dz[q − i·row − j·col] = Σ_{i,j} w[2 − i, 2 − j] · dzw[q + i·row + j·col], one pass
    that writes each pixel once (the forward's _wide_conv3x3 with the kernel flipped), not nine passes."""
    N, C, H, W = dx.shape
    F, _, KH, KW = w.shape
    (sh, sw), (ph, pw), (dil_h, dil_w) = stride, padding, dilation
    n, c = plane // C, plane % C
    if KH == 3 and KW == 3 and m == 1:
        _fill_wide(dzw[margin:], dy[n, c], dy[n, c], False, sh, sw, Wp)
        _wide_conv3x3(dxp, dzw, w[c, 0, ::-1, ::-1], w[c, 0, 0, 0] - w[c, 0, 0, 0], dil_h * Wp, dil_w)
    else:
        dxp[:] = 0
        for f in range(c * m, (c + 1) * m):
            _fill_wide(dzw[margin:], dy[n, f], dy[n, f], False, sh, sw, Wp)
            for i in range(KH):
                for j in range(KW):
                    _add_scaled_row(dxp[i * dil_h * Wp + j * dil_w:i * dil_h * Wp + j * dil_w + L], w[f, 0, i, j],
                                    dzw[margin:], 1)
    for h in range(H):
        _copy_row(dx[n, c, h], dxp[(h + ph) * Wp + pw:], 1)


@njit(cache=True)
def _add_3x3(total, a00, a01, a02, a10, a11, a12, a20, a21, a22):
    """total[i, j] += a_ij: a 3×3 kernel's nine sums, kept in registers by the dot loops, into their totals."""
    total[0, 0] += a00
    total[0, 1] += a01
    total[0, 2] += a02
    total[1, 0] += a10
    total[1, 1] += a11
    total[1, 2] += a12
    total[2, 0] += a20
    total[2, 1] += a21
    total[2, 2] += a22


@njit(cache=True, nogil=True)
def _direct_weight_grad(dy, y, masked, x, stride, padding, dilation, dw, bias_sums, zero, f0, f1):
    """With dz = dy · [y > 0] when masked (a fused ReLU), else dz = dy:

      dw[f, 0, i, j] = Σ_{n, oh, ow} dz[n, f, oh, ow] · x[n, f // m, oh·sh + i·dil_h − ph, ow·sw + j·dil_w − pw]
        bias_sums[f] = Σ_{n, oh, ow} dz[n, f, oh, ow]

    For the filters f in [f0, f1) (parallel over the filters: each thread sums its own dw[f] over the whole
    batch, never racy). dy (and y)
    are read once: each plane of dz is spread onto the wide grid, then each kernel offset is one long dot
    product with the (padded) input plane. The dots run in the data's dtype (`zero`), their sums in float64."""
    N, C, H, W = x.shape
    F, _, KH, KW = dw.shape
    (sh, sw), (ph, pw), (dil_h, dil_w) = stride, padding, dilation
    Hp = _padded_extent(H, ph, dy.shape[2], KH, sh, dil_h)
    Wp = _padded_extent(W, pw, dy.shape[3], KW, sw, dil_w)
    L = (Hp - (KH - 1) * dil_h) * Wp - (KW - 1) * dil_w
    m = F // C
    for f in range(f0, f1):
        c = f // m
        dzw = np.zeros(L + (KW - 1) * dil_w, dy.dtype)
        buf = np.zeros(Hp * Wp if Hp * Wp != H * W else 0, x.dtype)
        total = np.zeros((KH, KW), np.float64)
        bias_total = 0.0
        for n in range(N):
            bias_total += _fill_wide(dzw, dy[n, f], y[n, f], masked, sh, sw, Wp)
            src = _padded_plane(x[n, c], ph, pw, Wp, buf)
            if KH == 3 and KW == 3:
                _wide_dots3x3(total, dzw[:L], src, dil_h * Wp, dil_w, zero)
            else:  # one dot product over the plane per kernel offset
                for i in range(KH):
                    for j in range(KW):
                        total[i, j] += _dot_row(zero, dzw[:L], src[i * dil_h * Wp + j * dil_w:], 1)
        for i in range(KH):
            for j in range(KW):
                dw[f, 0, i, j] = total[i, j]
        bias_sums[f] = bias_total

"""Channels-last depthwise 3×3 convs, stride 1 or 2, no dilation, at most a pixel of padding on the left
(MobileNet's depthwise convs, Keras' 'same' or 'valid'), the nine taps summed in registers.

x rows (N·H, W·C), y rows (N·OH, OW·C), taps t (9, C) in (i, j) order, stride s, `top` and `left` padding:

    y[n, oh, ow, c] = b[c] + Σ_{i, j < 3} t[3i + j, c] · x[n, s·oh + i − top, s·ow + j − left, c]   (0 outside)

Output row (n, oh) reads the three input rows s·oh − top … s·oh − top + 2 (a row of zeros stands in for one
outside the image), and each output pixel is one loop over its C channels that adds its nine products
before it stores: 19 loads and 1 store per SIMD vector of outputs, where channels_last.py's kernels (one
multiply-add over the whole row per tap at stride 1, any size or dilation; a loop per pixel and tap at
other strides) load and store the output once per tap. The first pixel drops the left column of taps when
left = 1, the last one the right column when it falls on the padding (`applies` admits the shapes where
every other pixel has all nine).

At stride 1 with left = 1 and OW = W, the input gradient is the same conv of dy with the taps turned 180°
(t'[3i + j] = t[3(2 − i) + 2 − j]) and top' = 2 − top: dx[ih, iw] = Σ_{i, j} t[i, j] · dy[ih + top − i, iw + 1 − j].

Every index into a row is a slice's index ≥ 0: an index Numba cannot prove non-negative gets its wraparound
select, and LLVM left the loop scalar (3× slower than the row kernels; timings: benchmarks/RESULTS.md,
"Timings moved from kernel docstrings"). Rows go to the threads of kernels/cpu/threads.py.
"""
import numpy as np
from numba import njit

from .. import threads
from ..activation import fused_activate

TAP_WORK = 2  # a depthwise conv's passes do nine multiply-adds a value: on the threads from half SERIAL_BELOW
              # (the regressor's 16×16×192 depthwise at batch 16, forward 0.67 -> 0.45 ms, backward 1.64 -> 0.98)


def applies(x_shape, w_shape, y_shape, stride, top_left, dilation):
    """3×3, stride (s, s) with s = 1 or 2, no dilation, left padding 0 or 1, at least 2 output pixels a row,
    the first pixel's taps inside the row but for the left padding, the last's but for its right column."""
    s, left, W, OW = stride[0], top_left[1], x_shape[2], y_shape[2]
    return (tuple(w_shape[2:]) == (3, 3) and stride[1] == s and s in (1, 2) and tuple(dilation) == (1, 1)
            and left in (0, 1) and OW >= 2 and W >= 3 - left and W - s * (OW - 1) + left >= 2)


def gradient_applies(x_shape, w_shape, y_shape, stride, top_left, dilation):
    """The input gradient as a conv of dy with the turned taps: stride 1, left = 1, OW = W."""
    return (applies(x_shape, w_shape, y_shape, stride, top_left, dilation) and stride[0] == 1 and top_left[1] == 1
            and y_shape[2] == x_shape[2])


def nine_taps(w):
    """(C, 1, 3, 3) depthwise weights -> t (9, C), row i·3 + j holding tap (i, j) of every channel."""
    return np.ascontiguousarray(w.reshape(w.shape[0], 9).T)


def turned(taps):
    """The taps of the input gradient: t'[3i + j] = t[3(2 − i) + 2 − j]."""
    return np.ascontiguousarray(taps[::-1])


def depthwise3x3(x, taps, bias, stride, top_left, y, act):
    """y (N, OH, OW, C) = act(depthwise 3×3 of x (N, H, W, C) + bias) at stride (s, s), padding (top, left)."""
    N, H, W, C = x.shape
    OH, OW = y.shape[1], y.shape[2]
    x_rows, y_rows = x.reshape(N * H, W * C), y.reshape(N * OH, OW * C)
    zeros = np.zeros(W * C, x.dtype)
    threads.parallel_range(lambda r0, r1: _rows(x_rows, taps, bias, C, H, OH, stride[0], top_left[0], top_left[1],
                                                zeros, y_rows, act, r0, r1), N * OH, values=TAP_WORK * y.size)
    return y


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def _rows(x_rows, t, bias, C, H, OH, s, top, left, zeros, y_rows, act, r0, r1):
    """Output rows r0 ≤ r < r1 (r = n·OH + oh)."""
    for r in range(r0, r1):
        n, oh = r // OH, r % OH
        ih = s * oh - top
        above = x_rows[n * H + ih] if 0 <= ih < H else zeros
        middle = x_rows[n * H + ih + 1] if 0 <= ih + 1 < H else zeros
        below = x_rows[n * H + ih + 2] if 0 <= ih + 2 < H else zeros
        out = y_rows[r]
        _row(above, middle, below, t, bias, C, s, left, out)
        if act != 0:
            for k in range(out.size):
                out[k] = fused_activate(out[k], act)


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def _row(a, b, c, t, bias, C, s, left, out):
    """out (OW·C) = bias + the nine taps over the input rows a, b, c (W·C each): pixel p reads input pixels
    s·p − left + j, j < 3."""
    W, OW = a.size // C, out.size // C
    first = 0
    if left == 1:  # pixel 0: taps j = 1, 2 on input pixels 0, 1
        pa, pb, pc, o = a[:2 * C], b[:2 * C], c[:2 * C], out[:C]
        for k in range(C):
            o[k] = (bias[k] + pa[k] * t[1, k] + pa[C + k] * t[2, k] + pb[k] * t[4, k] + pb[C + k] * t[5, k]
                    + pc[k] * t[7, k] + pc[C + k] * t[8, k])
        first = 1
    end = OW if s * (OW - 1) - left + 2 < W else OW - 1  # the last pixel whole, or its right column on padding
    for p in range(first, end):
        lo, hi = (s * p - left) * C, (s * p - left + 3) * C
        pa, pb, pc, o = a[lo:hi], b[lo:hi], c[lo:hi], out[p * C:(p + 1) * C]
        for k in range(C):
            o[k] = (bias[k] + pa[k] * t[0, k] + pa[C + k] * t[1, k] + pa[2 * C + k] * t[2, k]
                    + pb[k] * t[3, k] + pb[C + k] * t[4, k] + pb[2 * C + k] * t[5, k]
                    + pc[k] * t[6, k] + pc[C + k] * t[7, k] + pc[2 * C + k] * t[8, k])
    if end < OW:  # the last pixel: taps j = 0, 1
        lo = (s * (OW - 1) - left) * C
        pa, pb, pc, o = a[lo:lo + 2 * C], b[lo:lo + 2 * C], c[lo:lo + 2 * C], out[(OW - 1) * C:]
        for k in range(C):
            o[k] = (bias[k] + pa[k] * t[0, k] + pa[C + k] * t[1, k] + pb[k] * t[3, k] + pb[C + k] * t[4, k]
                    + pc[k] * t[6, k] + pc[C + k] * t[7, k])


# The backward, band by band of rows: a band's input-gradient rows (the conv of dy with the turned taps),
# then the weight and bias gradients of the band's rows of dy, which read those dy rows again while they
# are in L2 (two kernels over the whole arrays read dy from main memory twice).

BAND_BYTES = 256 * 1024  # of dy a band
BANDED_MIN_CHANNELS = 64  # with fewer, the weight gradient's loops over C are too short: channels_last.py's
                          # row kernel is faster (16 channels at 128²: 5.4–6.6 vs 7.5 ms a backward)


def backward(dy, x, taps, top, dx, sums):
    """dx (N, H, W, C) ← the input gradient (None: not wanted) and sums (T, 10, C) float64 += the nine taps'
    weight gradients Σ dy · x (rows 0–8) and the bias gradient Σ dy (row 9), over share t of the rows
    (T = len(sums)); dy (N, OH, W, C) with OH = H."""
    N, H, W, C = x.shape
    dy_rows, x_rows = dy.reshape(N * H, W * C), x.reshape(N * H, W * C)
    dx_rows = dy_rows if dx is None else dx.reshape(N * H, W * C)  # (unwritten when dx is None)
    zeros, no_bias = np.zeros(W * C, x.dtype), np.zeros(C, x.dtype)
    band = max(1, BAND_BYTES // dy_rows[0].nbytes)
    turned_taps = turned(taps)
    one, no_activation = 1, 0  # the input gradient's stride, left padding and activation, passed in as
    # arguments: as literals in the kernel they would compile a second `_rows` for them (~0.6 s on an empty cache)
    threads.on_threads(_backward_shares, sums.shape[0], TAP_WORK * 2 * dy.size, dy_rows, x_rows, turned_taps, no_bias,
                       C, H, top, zeros, dx_rows, dx is not None, band, sums, one, no_activation)
    return dx


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})
def _backward_shares(dy_rows, x_rows, turned_taps, no_bias, C, H, top, zeros, dx_rows, want_dx, band, sums, one,
                     no_activation, t0, t1):
    T = sums.shape[0]
    rows = dy_rows.shape[0]
    part = np.zeros((10, C), dy_rows.dtype)
    for t in range(t0, t1):
        first, last = t * rows // T, (t + 1) * rows // T
        for b0 in range(first, last, band):
            b1 = min(last, b0 + band)
            if want_dx:
                _rows(dy_rows, turned_taps, no_bias, C, H, H, one, 2 - top, one, zeros, dx_rows, no_activation, b0, b1)
            for r in range(b0, b1):
                _weight_grad_row(dy_rows, x_rows, C, H, top, zeros, r, part)
                for q in range(10):
                    for k in range(C):
                        sums[t, q, k] += part[q, k]
                part[:] = 0


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})
def _weight_grad_row(dy_rows, x_rows, C, H, top, zeros, r, part):
    """part[3i + j] += Σ_ow dy[r, ow] · x[oh − top + i, ow + j − 1] and part[9] += Σ_ow dy[r, ow], one output
    row r = n·H + oh: pixel by pixel, each tap a loop over the C channels into its row of part (in L1)."""
    n, oh = r // H, r % H
    g_row = dy_rows[r]
    W = g_row.size // C
    bias = part[9]
    for p in range(W):
        g = g_row[p * C:(p + 1) * C]
        for k in range(C):
            bias[k] += g[k]
    for i in range(3):
        ih = oh - top + i
        if ih < 0 or ih >= H:
            continue
        src = x_rows[n * H + ih]
        left, middle, right = part[3 * i], part[3 * i + 1], part[3 * i + 2]
        g, px = g_row[:C], src[:2 * C]  # pixel 0: taps j = 1, 2
        for k in range(C):
            middle[k] += g[k] * px[k]
            right[k] += g[k] * px[C + k]
        for p in range(1, W - 1):
            g, px = g_row[p * C:(p + 1) * C], src[(p - 1) * C:(p + 2) * C]
            for k in range(C):
                left[k] += g[k] * px[k]
            for k in range(C):
                middle[k] += g[k] * px[C + k]
            for k in range(C):
                right[k] += g[k] * px[2 * C + k]
        g, px = g_row[(W - 1) * C:], src[(W - 2) * C:]  # pixel W − 1: taps j = 0, 1
        for k in range(C):
            left[k] += g[k] * px[k]
            middle[k] += g[k] * px[C + k]

"""2-D upsampling on the CPU (NCHW): nearest with integer scales, and bilinear with PyTorch's mapping.

    nearest, scale (sh, sw):  y[n, c, i, j] = x[n, c, i // sh, j // sw]
                              dx[n, c, h, w] = Σ of dy over the sh × sw block that copied x[n, c, h, w]
    bilinear, output (OH, OW): row i reads the input between rows r0[i] and r1[i] with weights
        1 − t[i] and t[i] (columns likewise with c0, c1, u), so
        y[i, j] = (1−t)(1−u)·x[r0, c0] + (1−t)u·x[r0, c1] + t(1−u)·x[r1, c0] + tu·x[r1, c1]
    source(i) = i·(H − 1)/(OH − 1)                      align_corners=True (0 when OH = 1)
    source(i) = max((i + 0.5)·H/OH − 0.5, 0)            align_corners=False
    r0 = ⌊source(i)⌋, r1 = min(r0 + 1, H − 1), t = source(i) − r0

The kernels work on P = N·C planes (H, W), one thread per plane (`prange`): the backward's scatter
(`+=` into four input pixels) stays inside a thread's own plane, so it cannot race.

Nearest with the channels last (x (N, H, W, C), the plate detector's neck): rows of W·C values; each input
row is widened once (every pixel's C channels copied sw times) into its first output row, which is then
copied to the other sh − 1; the backward sums each block of sh rows, then each pixel's sw copies. Input rows
go to the threads of kernels/cpu/threads.py, each a serial `nogil` kernel over a range of them.
"""
import numpy as np
from numba import njit, prange

from . import threads
from .workspace import output


def _planes(a):
    """(N, C, H, W) -> (N·C, H, W), a view."""
    return a.reshape(a.shape[0] * a.shape[1], a.shape[2], a.shape[3])


# ---------------------------------------------------------------------- nearest

@njit(cache=True, parallel=True)
def _nearest_planes(x, y, sh, sw):
    P, OH, OW = y.shape
    for p in prange(P):
        for i in range(OH):
            for j in range(OW):
                y[p, i, j] = x[p, i // sh, j // sw]


def upsample_nearest2d_forward(x, scale):
    """x (N, C, H, W) -> y (N, C, H·sh, W·sw)."""
    N, C, H, W = x.shape
    y = np.empty((N, C, H * scale[0], W * scale[1]), x.dtype)
    _nearest_planes(_planes(np.ascontiguousarray(x)), _planes(y), scale[0], scale[1])
    return y


@njit(cache=True, parallel=True)
def _nearest_backward_planes(dy, dx, sh, sw):
    P, H, W = dx.shape
    for p in prange(P):
        for h in range(H):
            for w in range(W):
                total = 0.0
                for a in range(sh):
                    for b in range(sw):
                        total += dy[p, h * sh + a, w * sw + b]
                dx[p, h, w] = total


def upsample_nearest2d_backward(dy, scale):
    """dy (N, C, H·sh, W·sw) -> dx (N, C, H, W)."""
    N, C, OH, OW = dy.shape
    dx = np.empty((N, C, OH // scale[0], OW // scale[1]), dy.dtype)
    _nearest_backward_planes(_planes(np.ascontiguousarray(dy)), _planes(dx), scale[0], scale[1])
    return dx


def upsample_nearest2d_last_forward(x, scale):
    """x (N, H, W, C) -> y (N, H·sh, W·sw, C)."""
    N, H, W, C = x.shape
    sh, sw = scale
    y = output((N, H * sh, W * sw, C), x.dtype)
    x_rows, y_rows = np.ascontiguousarray(x).reshape(N * H, W * C), y.reshape(N * H * sh, W * sw * C)
    threads.on_threads(_nearest_last_rows, N * H, y.size, x_rows, y_rows, C, sh, sw)
    return y


@njit(cache=True, nogil=True)
def _nearest_last_rows(x_rows, y_rows, C, sh, sw, r0, r1):
    """Input rows r0 ≤ r < r1 -> output rows r·sh … r·sh + sh − 1."""
    W = x_rows.shape[1] // C
    for r in range(r0, r1):
        src, first = x_rows[r], y_rows[r * sh]
        for w in range(W):
            pixel = src[w * C:(w + 1) * C]
            for b in range(sw):
                out = first[(w * sw + b) * C:(w * sw + b + 1) * C]
                for c in range(C):
                    out[c] = pixel[c]
        for a in range(1, sh):  # (explicit loops: a slice assignment compiles NumPy's broadcasting, ~2 s)
            copy = y_rows[r * sh + a]
            for k in range(first.size):
                copy[k] = first[k]


def upsample_nearest2d_last_backward(dy, scale):
    """dy (N, H·sh, W·sw, C) -> dx (N, H, W, C)."""
    N, OH, OW, C = dy.shape
    sh, sw = scale
    dx = output((N, OH // sh, OW // sw, C), dy.dtype)
    dy_rows, dx_rows = np.ascontiguousarray(dy).reshape(N * OH, OW * C), dx.reshape(-1, (OW // sw) * C)
    threads.on_threads(_nearest_last_backward_rows, dx_rows.shape[0], dy.size, dy_rows, dx_rows, C, sh, sw)
    return dx


@njit(cache=True, nogil=True)
def _nearest_last_backward_rows(dy_rows, dx_rows, C, sh, sw, r0, r1):
    """dx rows r0 ≤ r < r1: the sum of dy's rows r·sh … r·sh + sh − 1, then of each pixel's sw copies."""
    W = dx_rows.shape[1] // C
    total = np.empty(dy_rows.shape[1], dy_rows.dtype)
    for r in range(r0, r1):
        row = dy_rows[r * sh]
        for k in range(total.size):
            total[k] = row[k]
        for a in range(1, sh):
            row = dy_rows[r * sh + a]
            for k in range(total.size):
                total[k] += row[k]
        out = dx_rows[r]
        for w in range(W):
            o, piece = out[w * C:(w + 1) * C], total[w * sw * C:(w * sw + 1) * C]
            for c in range(C):
                o[c] = piece[c]
            for b in range(1, sw):
                piece = total[(w * sw + b) * C:(w * sw + b + 1) * C]
                for c in range(C):
                    o[c] += piece[c]


# ---------------------------------------------------------------------- bilinear

def _source_taps(in_size, out_size, align_corners, dtype):
    """For every output index along one axis: lower input index, upper input index, weight t of the upper."""
    i = np.arange(out_size, dtype=np.float64)
    if align_corners:
        source = i * ((in_size - 1) / (out_size - 1)) if out_size > 1 else np.zeros(out_size)
    else:
        source = np.maximum((i + 0.5) * (in_size / out_size) - 0.5, 0.0)
    lower = source.astype(np.int64)                      # ⌊source⌋ (source ≥ 0)
    upper = np.minimum(lower + 1, in_size - 1)
    return lower, upper, (source - lower).astype(dtype)


@njit(cache=True, parallel=True)
def _bilinear_planes(x, y, r0, r1, t, c0, c1, u):
    P, OH, OW = y.shape
    for p in prange(P):
        for i in range(OH):
            for j in range(OW):
                top = (1 - u[j]) * x[p, r0[i], c0[j]] + u[j] * x[p, r0[i], c1[j]]
                bottom = (1 - u[j]) * x[p, r1[i], c0[j]] + u[j] * x[p, r1[i], c1[j]]
                y[p, i, j] = (1 - t[i]) * top + t[i] * bottom


def upsample_bilinear2d_forward(x, out_hw, align_corners):
    """x (N, C, H, W) -> y (N, C, OH, OW)."""
    N, C, H, W = x.shape
    rows = _source_taps(H, out_hw[0], align_corners, x.dtype)
    cols = _source_taps(W, out_hw[1], align_corners, x.dtype)
    y = np.empty((N, C, out_hw[0], out_hw[1]), x.dtype)
    _bilinear_planes(_planes(np.ascontiguousarray(x)), _planes(y), *rows, *cols)
    return y


@njit(cache=True, parallel=True)
def _bilinear_backward_planes(dy, dx, r0, r1, t, c0, c1, u):
    P, OH, OW = dy.shape
    for p in prange(P):
        for i in range(OH):
            for j in range(OW):
                g = dy[p, i, j]
                dx[p, r0[i], c0[j]] += (1 - t[i]) * (1 - u[j]) * g
                dx[p, r0[i], c1[j]] += (1 - t[i]) * u[j] * g
                dx[p, r1[i], c0[j]] += t[i] * (1 - u[j]) * g
                dx[p, r1[i], c1[j]] += t[i] * u[j] * g


def upsample_bilinear2d_backward(dy, x_shape, align_corners):
    """dy (N, C, OH, OW) -> dx x_shape: each output's gradient goes back to its four taps, weighted."""
    H, W = x_shape[2], x_shape[3]
    rows = _source_taps(H, dy.shape[2], align_corners, dy.dtype)
    cols = _source_taps(W, dy.shape[3], align_corners, dy.dtype)
    dx = np.zeros(x_shape, dy.dtype)
    _bilinear_backward_planes(_planes(np.ascontiguousarray(dy)), _planes(dx), *rows, *cols)
    return dx

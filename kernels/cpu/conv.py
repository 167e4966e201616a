"""2-D convolution, transposed convolution and constant padding on the CPU (NCHW).

Convolution, x (N, C, H, W), w (F, C/G, KH, KW), G groups, stride s, padding p, dilation d:

    y[n, f, oh, ow] = b[f] + Σ_{c, i, j} w[f, c, i, j] · x[n, g·C/G + c, oh·s + i·d − p, ow·s + j·d − p]

(g = f // (F/G) is the group of filter f; x is 0 outside the image), OH = (H + 2p − d·(KH − 1) − 1) // s + 1.
Its gradients are the same sums read backwards: dx scatters dy through the filters, dw correlates dy with x,
db = Σ_{n, oh, ow} dy.

Three algorithms, chosen by the shape of the problem (`_algorithm`):

- **im2col + GEMM** (the general case, and where the FLOPs are). `_im2col` copies every input window into a
  column of a matrix `cols` (C·KH·KW, N·OH·OW), the batch folded into the columns so that one BLAS call
  does the whole batch: per group, y (F/G, N·OH·OW) = W (F/G, C/G·KH·KW) @ cols. The weight gradient is
  dW = dy @ colsᵀ and the input gradient is dcols = Wᵀ @ dy, which `_col2im` adds back into the image.
  BLAS (NumPy's `@`, multithreaded OpenBLAS) does the arithmetic near the machine's peak; the Numba kernels
  only move memory. `_im2col` is parallel over the rows of `cols` and `_col2im` over the (n, c) planes of
  dx, so no two threads ever write the same element. Big batches are cut into chunks of images so that
  `cols` stays under `COLS_BUDGET_BYTES`.
- **1×1, stride 1, no padding, no groups**: x is already its own `cols`: per image y = W @ x (C, H·W).
- **Direct, one input channel per filter** (C/G = 1: depthwise convs with G = C, and a first layer on a
  grey image, C = 1): each filter reads a single plane, so im2col would copy the input KH·KW times to feed
  a GEMM with an inner dimension of KH·KW. Direct loops instead: parallel over output planes (forward),
  over input planes (dx) and over filters (dw), each thread writing only its own planes or filters.

Transposed convolution is the adjoint of convolution: its forward is conv2d's input gradient (col2im)
and its backward is conv2d's forward (dx) and conv2d's weight gradient (dw), so it reuses those kernels.
"""
import numpy as np
from numba import njit, prange

COLS_BUDGET_BYTES = 32 * 2**20  # im2col matrices larger than this are built a few images at a time


def conv_output_size(size, kernel, stride, padding, dilation):
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv_transpose_output_size(size, kernel, stride, padding, output_padding, dilation):
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


# ---------------------------------------------------------------------- public functions (the contract)

def conv2d_forward(x, w, b, stride, padding, dilation, groups):
    """x (N, C, H, W), w (F, C/G, KH, KW), b (F,) or None -> y (N, F, OH, OW)."""
    x, w = np.ascontiguousarray(x), np.ascontiguousarray(w)
    N, _, H, W = x.shape
    F, _, KH, KW = w.shape
    OH = conv_output_size(H, KH, stride[0], padding[0], dilation[0])
    OW = conv_output_size(W, KW, stride[1], padding[1], dilation[1])
    y = _conv(x, w, (N, F, OH, OW), stride, padding, dilation, groups)
    if b is not None:
        _add_bias(y, b)
    return y


def conv2d_backward(dy, x, w, stride, padding, dilation, groups, need_dx, need_dw, need_db):
    """dy (N, F, OH, OW) -> (dx like x, dw like w, db (F,)); None for what is not needed."""
    dy, x, w = np.ascontiguousarray(dy), np.ascontiguousarray(x), np.ascontiguousarray(w)
    dx = _conv_input_grad(dy, w, x.shape, stride, padding, dilation, groups) if need_dx else None
    dw = _conv_weight_grad(dy, x, w.shape, stride, padding, dilation, groups) if need_dw else None
    db = dy.sum(axis=(0, 2, 3)) if need_db else None
    return dx, dw, db


def conv_transpose2d_forward(x, w, b, stride, padding, output_padding, dilation, groups):
    """x (N, C, H, W), w (C, F/G, KH, KW), b (F,) or None -> y (N, F, OH, OW),
    OH = (H − 1)·s − 2p + d·(KH − 1) + output_padding + 1.

    y is the input gradient of the convolution y' = conv2d(y, w) (which maps F channels to C): col2im."""
    x, w = np.ascontiguousarray(x), np.ascontiguousarray(w)
    N, _, H, W = x.shape
    _, Fg, KH, KW = w.shape
    OH = conv_transpose_output_size(H, KH, stride[0], padding[0], output_padding[0], dilation[0])
    OW = conv_transpose_output_size(W, KW, stride[1], padding[1], output_padding[1], dilation[1])
    y = _conv_input_grad(x, w, (N, Fg * groups, OH, OW), stride, padding, dilation, groups)
    if b is not None:
        _add_bias(y, b)
    return y


def conv_transpose2d_backward(dy, x, w, stride, padding, output_padding, dilation, groups,
                              need_dx, need_dw, need_db):
    """dy (N, F, OH, OW) -> (dx like x, dw like w, db (F,)).

    dx = conv2d(dy, w) (kept to x's size: with output_padding ≥ stride, allowed when smaller than the
    dilation, conv2d gives extra rows), dw = conv2d's weight gradient with the roles of x and dy swapped."""
    dy, x, w = np.ascontiguousarray(dy), np.ascontiguousarray(x), np.ascontiguousarray(w)
    dx = dw = db = None
    if need_dx:
        N, C, H, W = x.shape
        OH = conv_output_size(dy.shape[2], w.shape[2], stride[0], padding[0], dilation[0])
        OW = conv_output_size(dy.shape[3], w.shape[3], stride[1], padding[1], dilation[1])
        dx = _conv(dy, w, (N, C, OH, OW), stride, padding, dilation, groups)
        if (OH, OW) != (H, W):
            dx = np.ascontiguousarray(dx[:, :, :H, :W])
    if need_dw:
        dw = _conv_weight_grad(x, dy, w.shape, stride, padding, dilation, groups)
    if need_db:
        db = dy.sum(axis=(0, 2, 3))
    return dx, dw, db


def pad2d_forward(x, pad, value):
    """x (N, C, H, W), pad = (left, right, top, bottom) -> y (N, C, H + top + bottom, W + left + right)."""
    left, right, top, bottom = pad
    N, C, H, W = x.shape
    y = np.full((N, C, H + top + bottom, W + left + right), value, x.dtype)
    y[:, :, top:top + H, left:left + W] = x
    return y


def pad2d_backward(dy, pad):
    """The gradient of padding is the slice of dy that covers the original image."""
    left, right, top, bottom = pad
    return np.ascontiguousarray(dy[:, :, top:dy.shape[2] - bottom, left:dy.shape[3] - right])


# ---------------------------------------------------------------------- dispatch

def _algorithm(x_shape, w_shape, y_shape, stride, padding, groups):
    """The algorithm for these shapes: "direct" (one input channel per filter), "matmul" (plain 1×1), "im2col"."""
    F, Cg, KH, KW = w_shape
    if Cg == 1:
        return "direct"
    pointwise = KH == KW == 1 and stride == (1, 1) and padding == (0, 0)
    if groups == 1 and pointwise and tuple(x_shape[2:]) == tuple(y_shape[2:]):
        return "matmul"
    return "im2col"


def _conv(x, w, y_shape, stride, padding, dilation, groups):
    """y = conv2d(x, w) without bias, y of shape y_shape (N, F, OH, OW)."""
    algorithm = _algorithm(x.shape, w.shape, y_shape, stride, padding, groups)
    y = np.empty(y_shape, x.dtype)
    if algorithm == "direct":
        _direct_forward(x, w, stride, padding, dilation, y)
    elif algorithm == "matmul":
        N, C, H, W = x.shape
        np.matmul(w.reshape(w.shape[0], C), x.reshape(N, C, H * W), out=y.reshape(N, y_shape[1], H * W))
    else:
        _gemm_forward(x, w, stride, padding, dilation, groups, y)
    return y


def _conv_input_grad(dy, w, x_shape, stride, padding, dilation, groups):
    """dx (x_shape) of y = conv2d(x, w), given dy."""
    algorithm = _algorithm(x_shape, w.shape, dy.shape, stride, padding, groups)
    dx = np.zeros(x_shape, dy.dtype)
    if algorithm == "direct":
        _direct_input_grad(dy, w, stride, padding, dilation, dx)
    elif algorithm == "matmul":
        N, C, H, W = x_shape
        F = w.shape[0]
        np.matmul(w.reshape(F, C).T, dy.reshape(N, F, H * W), out=dx.reshape(N, C, H * W))
    else:
        _gemm_input_grad(dy, w, stride, padding, dilation, groups, dx)
    return dx


def _conv_weight_grad(dy, x, w_shape, stride, padding, dilation, groups):
    """dw (w_shape) of y = conv2d(x, w), given dy (whose shape sets OH, OW)."""
    algorithm = _algorithm(x.shape, w_shape, dy.shape, stride, padding, groups)
    dw = np.zeros(w_shape, dy.dtype)
    if algorithm == "direct":
        _direct_weight_grad(dy, x, stride, padding, dilation, dw)
    elif algorithm == "matmul":
        N, C, H, W = x.shape
        F = w_shape[0]
        # Σₙ dy[n] (F, HW) @ x[n]ᵀ (HW, C), done by tensordot as one GEMM over the folded batch
        dw.reshape(F, C)[...] = np.tensordot(dy.reshape(N, F, H * W), x.reshape(N, C, H * W), axes=([0, 2], [0, 2]))
    else:
        _gemm_weight_grad(dy, x, stride, padding, dilation, groups, dw)
    return dw


@njit(cache=True, parallel=True)
def _add_bias(y, b):
    """y[n, f] += b[f], in place, parallel over the (n, f) planes."""
    N, F, OH, OW = y.shape
    for plane in prange(N * F):
        n, f = plane // F, plane % F
        for oh in range(OH):
            for ow in range(OW):
                y[n, f, oh, ow] += b[f]


@njit(cache=True)
def _valid_range(offset, stride, in_size, out_size):
    """The outputs o in [lo, hi) whose input index o·stride + offset falls inside [0, in_size)."""
    lo = max(0, (-offset + stride - 1) // stride)
    hi = min(out_size, (in_size - 1 - offset) // stride + 1)
    return lo, max(lo, hi)


# ---------------------------------------------------------------------- the inner loops, one image row at a time
#
# Every kernel below works on rows: `a` is a run of outputs along a row, `b` the input row it reads with a
# step of `stride` (b starts at the first pixel that a[0] reads). The step-1 case has its own loop, which LLVM
# turns into SIMD code; a generic `k·step` index (or a 4-D index that might be negative) stays scalar and is
# several times slower.

@njit(cache=True)
def _copy_row(a, b, step):
    """a[k] = b[k·step]"""
    if step == 1:
        for k in range(a.size):
            a[k] = b[k]
    else:
        for k in range(a.size):
            a[k] = b[k * step]


@njit(cache=True)
def _scatter_add_row(b, a, step):
    """b[k·step] += a[k]  (the adjoint of _copy_row)"""
    if step == 1:
        for k in range(a.size):
            b[k] += a[k]
    else:
        for k in range(a.size):
            b[k * step] += a[k]


@njit(cache=True)
def _add_scaled_row(a, weight, b, step):
    """a[k] += weight · b[k·step]"""
    if step == 1:
        for k in range(a.size):
            a[k] += weight * b[k]
    else:
        for k in range(a.size):
            a[k] += weight * b[k * step]


@njit(cache=True)
def _scatter_add_scaled_row(b, weight, a, step):
    """b[k·step] += weight · a[k]  (the adjoint of _add_scaled_row)"""
    if step == 1:
        for k in range(a.size):
            b[k] += weight * a[k]
    else:
        for k in range(a.size):
            b[k * step] += weight * a[k]


@njit(cache=True, fastmath={"reassoc", "contract"})
def _dot_row(total, a, b, step):
    """total + Σₖ a[k] · b[k·step], in total's dtype (reassociated, so that it vectorizes like BLAS's dot)."""
    if step == 1:
        for k in range(a.size):
            total += a[k] * b[k]
    else:
        for k in range(a.size):
            total += a[k] * b[k * step]
    return total


# ---------------------------------------------------------------------- im2col + GEMM

@njit(cache=True, parallel=True)
def _im2col(x, KH, KW, stride, padding, dilation, OH, OW, cols):
    """x (N, C, H, W) -> cols (C·KH·KW, N·OH·OW), one row per (c, i, j), one column per output pixel:

        cols[(c·KH + i)·KW + j, (n·OH + oh)·OW + ow] = x[n, c, oh·sh + i·dil_h − ph, ow·sw + j·dil_w − pw]

    (0 where that pixel is padding).

    Parallel over the rows: each thread fills whole rows, left to right."""
    N, C, H, W = x.shape
    (sh, sw), (ph, pw), (dil_h, dil_w) = stride, padding, dilation
    for row in prange(C * KH * KW):
        c, i, j = row // (KH * KW), (row // KW) % KH, row % KW
        oh_lo, oh_hi = _valid_range(i * dil_h - ph, sh, H, OH)
        ow_lo, ow_hi = _valid_range(j * dil_w - pw, sw, W, OW)
        iw_lo = ow_lo * sw + j * dil_w - pw
        for n in range(N):
            for oh in range(OH):
                out = cols[row, (n * OH + oh) * OW:(n * OH + oh + 1) * OW]
                if oh < oh_lo or oh >= oh_hi:
                    out[:] = 0
                    continue
                out[:ow_lo] = 0
                _copy_row(out[ow_lo:ow_hi], x[n, c, oh * sh + i * dil_h - ph, iw_lo:], sw)
                out[ow_hi:] = 0


@njit(cache=True, parallel=True)
def _col2im(cols, KH, KW, stride, padding, dilation, OH, OW, dx):
    """The adjoint of _im2col: dx[n, c, ih, iw] += every entry of cols that _im2col copied from (ih, iw).

    Parallel over the (n, c) planes of dx: a thread adds only into its own plane, so there are no races."""
    N, C, H, W = dx.shape
    (sh, sw), (ph, pw), (dil_h, dil_w) = stride, padding, dilation
    for plane in prange(N * C):
        n, c = plane // C, plane % C
        for i in range(KH):
            oh_lo, oh_hi = _valid_range(i * dil_h - ph, sh, H, OH)
            for j in range(KW):
                ow_lo, ow_hi = _valid_range(j * dil_w - pw, sw, W, OW)
                iw_lo = ow_lo * sw + j * dil_w - pw
                row = (c * KH + i) * KW + j
                for oh in range(oh_lo, oh_hi):
                    ih, col = oh * sh + i * dil_h - ph, (n * OH + oh) * OW
                    _scatter_add_row(dx[n, c, ih, iw_lo:], cols[row, col + ow_lo:col + ow_hi], sw)


@njit(cache=True, parallel=True)
def _rows_to_nchw(y_rows, y):
    """y_rows (F, N·OH·OW), the GEMM's output layout -> y (N, F, OH, OW)."""
    N, F, OH, OW = y.shape
    for plane in prange(N * F):
        n, f = plane // F, plane % F
        for oh in range(OH):
            for ow in range(OW):
                y[n, f, oh, ow] = y_rows[f, (n * OH + oh) * OW + ow]


@njit(cache=True, parallel=True)
def _nchw_to_rows(dy, dy_rows):
    """dy (N, F, OH, OW) -> dy_rows (F, N·OH·OW), the layout the GEMMs want."""
    N, F, OH, OW = dy.shape
    for plane in prange(N * F):
        n, f = plane // F, plane % F
        for oh in range(OH):
            for ow in range(OW):
                dy_rows[f, (n * OH + oh) * OW + ow] = dy[n, f, oh, ow]


def _image_chunks(N, bytes_per_image):
    """Split the batch into runs of images [n0, n1) whose im2col matrix fits COLS_BUDGET_BYTES."""
    per_chunk = max(1, COLS_BUDGET_BYTES // max(1, bytes_per_image))
    return [(n0, min(N, n0 + per_chunk)) for n0 in range(0, N, per_chunk)]


def _gemm_setup(x_shape, w_shape, y_shape, groups, dtype):
    """Shapes of the GEMMs: per group, W_g (F/G, K) @ cols_g (K, columns), K = C/G·KH·KW."""
    F, Cg, KH, KW = w_shape
    K = Cg * KH * KW
    pixels = y_shape[2] * y_shape[3]
    chunks = _image_chunks(x_shape[0], Cg * groups * KH * KW * pixels * np.dtype(dtype).itemsize)
    return F // groups, K, pixels, chunks


def _gemm_forward(x, w, stride, padding, dilation, groups, y):
    """y = conv2d(x, w): per chunk of images, im2col, one GEMM per group, then back to NCHW."""
    N, F, OH, OW = y.shape
    KH, KW = w.shape[2], w.shape[3]
    Fg, K, pixels, chunks = _gemm_setup(x.shape, w.shape, y.shape, groups, x.dtype)
    w_rows = w.reshape(F, K)
    for n0, n1 in chunks:
        cols = np.empty((K * groups, (n1 - n0) * pixels), x.dtype)
        _im2col(x[n0:n1], KH, KW, stride, padding, dilation, OH, OW, cols)
        y_rows = np.empty((F, (n1 - n0) * pixels), x.dtype)
        for g in range(groups):
            np.matmul(w_rows[g * Fg:(g + 1) * Fg], cols[g * K:(g + 1) * K], out=y_rows[g * Fg:(g + 1) * Fg])
        _rows_to_nchw(y_rows, y[n0:n1])


def _gemm_input_grad(dy, w, stride, padding, dilation, groups, dx):
    """dx += col2im(Wᵀ @ dy), per chunk of images and per group."""
    N, F, OH, OW = dy.shape
    KH, KW = w.shape[2], w.shape[3]
    Fg, K, pixels, chunks = _gemm_setup(dx.shape, w.shape, dy.shape, groups, dy.dtype)
    w_rows = w.reshape(F, K)
    for n0, n1 in chunks:
        dy_rows = np.empty((F, (n1 - n0) * pixels), dy.dtype)
        _nchw_to_rows(dy[n0:n1], dy_rows)
        dcols = np.empty((K * groups, (n1 - n0) * pixels), dy.dtype)
        for g in range(groups):
            np.matmul(w_rows[g * Fg:(g + 1) * Fg].T, dy_rows[g * Fg:(g + 1) * Fg], out=dcols[g * K:(g + 1) * K])
        _col2im(dcols, KH, KW, stride, padding, dilation, OH, OW, dx[n0:n1])


def _gemm_weight_grad(dy, x, stride, padding, dilation, groups, dw):
    """dw += dy @ colsᵀ, per chunk of images (in turn: no races) and per group."""
    N, F, OH, OW = dy.shape
    KH, KW = dw.shape[2], dw.shape[3]
    Fg, K, pixels, chunks = _gemm_setup(x.shape, dw.shape, dy.shape, groups, dy.dtype)
    dw_rows = dw.reshape(F, K)
    for n0, n1 in chunks:
        cols = np.empty((K * groups, (n1 - n0) * pixels), x.dtype)
        _im2col(x[n0:n1], KH, KW, stride, padding, dilation, OH, OW, cols)
        dy_rows = np.empty((F, (n1 - n0) * pixels), dy.dtype)
        _nchw_to_rows(dy[n0:n1], dy_rows)
        for g in range(groups):
            dw_rows[g * Fg:(g + 1) * Fg] += dy_rows[g * Fg:(g + 1) * Fg] @ cols[g * K:(g + 1) * K].T


# ---------------------------------------------------------------------- direct: one input channel per filter

@njit(cache=True, parallel=True)
def _direct_forward(x, w, stride, padding, dilation, y):
    """x (N, C, H, W), w (F, 1, KH, KW), F = m·C -> y (N, F, OH, OW): filter f reads only channel f // m,

        y[n, f, oh, ow] = Σ_{i, j} w[f, 0, i, j] · x[n, f // m, oh·sh + i·dil_h − ph, ow·sw + j·dil_w − pw]

    Parallel over the output planes (n, f); for each kernel offset (i, j) the whole plane gets w[f, 0, i, j]
    times a shifted input plane (the valid ranges are worked out first, so the inner loop has no test)."""
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    OH, OW = y.shape[2], y.shape[3]
    (sh, sw), (ph, pw), (dil_h, dil_w) = stride, padding, dilation
    m = F // C
    for plane in prange(N * F):
        n, f = plane // F, plane % F
        c = f // m
        y[n, f] = 0
        for i in range(KH):
            oh_lo, oh_hi = _valid_range(i * dil_h - ph, sh, H, OH)
            for j in range(KW):
                ow_lo, ow_hi = _valid_range(j * dil_w - pw, sw, W, OW)
                iw_lo = ow_lo * sw + j * dil_w - pw
                weight = w[f, 0, i, j]
                for oh in range(oh_lo, oh_hi):
                    ih = oh * sh + i * dil_h - ph
                    _add_scaled_row(y[n, f, oh, ow_lo:ow_hi], weight, x[n, c, ih, iw_lo:], sw)


@njit(cache=True, parallel=True)
def _direct_input_grad(dy, w, stride, padding, dilation, dx):
    """dx[n, c, ih, iw] += Σ w[f, 0, i, j] · dy[n, f, oh, ow] over the m filters f that read channel c and
    the (i, j, oh, ow) that met (ih, iw). Parallel over the input planes (n, c): each thread owns its plane."""
    N, C, H, W = dx.shape
    F, _, KH, KW = w.shape
    OH, OW = dy.shape[2], dy.shape[3]
    (sh, sw), (ph, pw), (dil_h, dil_w) = stride, padding, dilation
    m = F // C
    for plane in prange(N * C):
        n, c = plane // C, plane % C
        for f in range(c * m, (c + 1) * m):
            for i in range(KH):
                oh_lo, oh_hi = _valid_range(i * dil_h - ph, sh, H, OH)
                for j in range(KW):
                    ow_lo, ow_hi = _valid_range(j * dil_w - pw, sw, W, OW)
                    iw_lo = ow_lo * sw + j * dil_w - pw
                    weight = w[f, 0, i, j]
                    for oh in range(oh_lo, oh_hi):
                        ih = oh * sh + i * dil_h - ph
                        _scatter_add_scaled_row(dx[n, c, ih, iw_lo:], weight, dy[n, f, oh, ow_lo:ow_hi], sw)


@njit(cache=True, parallel=True)
def _direct_weight_grad(dy, x, stride, padding, dilation, dw):
    """dw[f, 0, i, j] = Σ_{n, oh, ow} dy[n, f, oh, ow] · x[n, f // m, oh·sh + i·dil_h − ph, ow·sw + j·dil_w − pw]

    Parallel over the filters f: each thread sums its own dw[f] over the whole batch (never racy)."""
    N, C, H, W = x.shape
    F, _, KH, KW = dw.shape
    OH, OW = dy.shape[2], dy.shape[3]
    (sh, sw), (ph, pw), (dil_h, dil_w) = stride, padding, dilation
    m = F // C
    for f in prange(F):
        c = f // m
        for i in range(KH):
            oh_lo, oh_hi = _valid_range(i * dil_h - ph, sh, H, OH)
            for j in range(KW):
                ow_lo, ow_hi = _valid_range(j * dil_w - pw, sw, W, OW)
                iw_lo = ow_lo * sw + j * dil_w - pw
                total = dw[f, 0, i, j]  # 0, in dw's dtype
                for n in range(N):
                    for oh in range(oh_lo, oh_hi):
                        ih = oh * sh + i * dil_h - ph
                        total = _dot_row(total, dy[n, f, oh, ow_lo:ow_hi], x[n, c, ih, iw_lo:], sw)
                dw[f, 0, i, j] = total

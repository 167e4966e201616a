"""NumPy reference of 2-D convolution, transposed convolution and constant padding: explicit sums, slow.

Convolution (cross-correlation, as in every deep-learning library), x (N, C, H, W), w (F, C/G, KH, KW):

    y[n, f, oh, ow] = b[f] + Σ_{c, i, j} w[f, c, i, j] · x[n, g·C/G + c, oh·s + i·d − p, ow·s + j·d − p]

where g = f // (F/G) is the group of filter f and x is 0 outside the image. OH = (H + 2p − d·(K−1) − 1)//s + 1.

Transposed convolution, x (N, C, H, W), w (C, F/G, KH, KW): every input pixel scatters a copy of its filter,

    y[n, g·F/G + f, h·s + i·d − p, w·s + j·d − p] += x[n, c, h, w] · w[c, f, i, j]     (g = c // (C/G))

onto an output of size OH = (H − 1)·s − 2p + d·(K − 1) + output_padding + 1.

Each function loops over the kernel offsets (i, j) and, for each, sums over the channels with einsum: that
is the formula above with the window's sum written out one offset at a time.
"""
import numpy as np


def conv_output_size(size, kernel, stride, padding, dilation):
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv_transpose_output_size(size, kernel, stride, padding, output_padding, dilation):
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


def _window_slices(i, j, out_hw, stride, dilation):
    """Rows and columns of the (padded) input that kernel offset (i, j) meets, one per output pixel."""
    (OH, OW), (sh, sw), (dh, dw) = out_hw, stride, dilation
    return (slice(i * dh, i * dh + (OH - 1) * sh + 1, sh),
            slice(j * dw, j * dw + (OW - 1) * sw + 1, sw))


def _zero_pad(x, padding):
    ph, pw = padding
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def conv2d_forward(x, w, b, stride, padding, dilation, groups):
    N, C, H, W = x.shape
    F, Cg, KH, KW = w.shape
    Fg = F // groups
    OH = conv_output_size(H, KH, stride[0], padding[0], dilation[0])
    OW = conv_output_size(W, KW, stride[1], padding[1], dilation[1])
    xp = _zero_pad(x, padding)
    y = np.zeros((N, F, OH, OW), x.dtype)
    for g in range(groups):
        xs, fs = slice(g * Cg, (g + 1) * Cg), slice(g * Fg, (g + 1) * Fg)
        for i in range(KH):
            for j in range(KW):
                rows, cols = _window_slices(i, j, (OH, OW), stride, dilation)
                y[:, fs] += np.einsum("nchw,fc->nfhw", xp[:, xs, rows, cols], w[fs, :, i, j])
    if b is not None:
        y += b[None, :, None, None]
    return y


def conv2d_backward(dy, x, w, stride, padding, dilation, groups, need_dx, need_dw, need_db):
    """Returns (dx, dw, db), None for what is not needed: each product of the forward sends its gradient back
    to both factors."""
    F, Cg, KH, KW = w.shape
    Fg = F // groups
    OH, OW = dy.shape[2:]
    xp = _zero_pad(x, padding)
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    for g in range(groups):
        xs, fs = slice(g * Cg, (g + 1) * Cg), slice(g * Fg, (g + 1) * Fg)
        for i in range(KH):
            for j in range(KW):
                rows, cols = _window_slices(i, j, (OH, OW), stride, dilation)
                dxp[:, xs, rows, cols] += np.einsum("nfhw,fc->nchw", dy[:, fs], w[fs, :, i, j])
                dw[fs, :, i, j] = np.einsum("nfhw,nchw->fc", dy[:, fs], xp[:, xs, rows, cols])
    ph, pw = padding
    dx = dxp[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]]
    return _needed((dx, dw, dy.sum(axis=(0, 2, 3))), (need_dx, need_dw, need_db))


def _needed(grads, needs):
    return tuple(g if need else None for g, need in zip(grads, needs))


def conv_transpose2d_forward(x, w, b, stride, padding, output_padding, dilation, groups):
    """Scatter each input pixel times its filter onto a full canvas, then cut `padding` off every side."""
    N, C, H, W = x.shape
    _, Fg, KH, KW = w.shape
    Cg, F = C // groups, Fg * groups
    OH = conv_transpose_output_size(H, KH, stride[0], padding[0], output_padding[0], dilation[0])
    OW = conv_transpose_output_size(W, KW, stride[1], padding[1], output_padding[1], dilation[1])
    ph, pw = padding
    canvas = np.zeros((N, F, OH + 2 * ph, OW + 2 * pw), x.dtype)  # output_padding rows/columns stay 0
    for g in range(groups):
        xs, fs = slice(g * Cg, (g + 1) * Cg), slice(g * Fg, (g + 1) * Fg)
        for i in range(KH):
            for j in range(KW):
                rows, cols = _window_slices(i, j, (H, W), stride, dilation)
                canvas[:, fs, rows, cols] += np.einsum("nchw,cf->nfhw", x[:, xs], w[xs, :, i, j])
    y = canvas[:, :, ph:ph + OH, pw:pw + OW].copy()
    if b is not None:
        y += b[None, :, None, None]
    return y


def conv_transpose2d_backward(dy, x, w, stride, padding, output_padding, dilation, groups, need_dx, need_dw, need_db):
    """The transposed conv is the adjoint of conv2d(·, w): y = conv2dᵀ x. So dx = conv2d(dy, w) (its rows past
    x's size, which output_padding ≥ stride can give, dropped), and dw is conv2d's weight gradient with the
    roles of input and output gradient swapped: conv2d of input dy, output gradient x."""
    N, C, H, W = x.shape
    dx = conv2d_forward(dy, w, None, stride, padding, dilation, groups)[:, :, :H, :W]
    dw = conv2d_backward(x, dy, w, stride, padding, dilation, groups, False, True, False)[1]
    return _needed((dx, dw, dy.sum(axis=(0, 2, 3))), (need_dx, need_dw, need_db))


def pad2d_forward(x, pad, value):
    """pad = (left, right, top, bottom) on the last two axes, filled with `value`."""
    left, right, top, bottom = pad
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=value)


def pad2d_backward(dy, pad):
    left, right, top, bottom = pad
    return dy[:, :, top:dy.shape[2] - bottom, left:dy.shape[3] - right].copy()

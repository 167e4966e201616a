"""NumPy reference of 2-D upsampling (NCHW): nearest with integer scales, and bilinear as PyTorch maps it;
nearest also with the channels last.

    nearest, scale (sh, sw):  y[n, c, i, j] = x[n, c, i // sh, j // sw]   (channels last: y[n, i, j, c])
    bilinear, output (OH, OW): output row i reads input row r = source(i) (a real number), between the rows
        r0 = ⌊r⌋ and r1 = min(r0 + 1, H − 1), with weights 1 − (r − r0) and r − r0; columns likewise, and
        y = Σ of the 4 neighbours, each weighted by its row weight × column weight.
    source(i) = i·(H − 1)/(OH − 1)                      align_corners=True (0 when OH = 1)
    source(i) = max((i + 0.5)·H/OH − 0.5, 0)            align_corners=False
"""
import numpy as np


def upsample_nearest2d_forward(x, scale):
    return x.repeat(scale[0], axis=2).repeat(scale[1], axis=3)


def upsample_nearest2d_backward(dy, scale):
    """Each input pixel receives the sum of the gradients of its sh × sw copies."""
    N, C, OH, OW = dy.shape
    sh, sw = scale
    return dy.reshape(N, C, OH // sh, sh, OW // sw, sw).sum(axis=(3, 5))


def upsample_nearest2d_last_forward(x, scale):
    """x (N, H, W, C) -> (N, H·sh, W·sw, C)."""
    return x.repeat(scale[0], axis=1).repeat(scale[1], axis=2)


def upsample_nearest2d_last_backward(dy, scale):
    N, OH, OW, C = dy.shape
    sh, sw = scale
    return dy.reshape(N, OH // sh, sh, OW // sw, sw, C).sum(axis=(2, 4))


def source_coordinate(i, in_size, out_size, align_corners):
    """The input coordinate (real) that output index i samples, as PyTorch computes it."""
    if align_corners:
        return i * (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
    return max((i + 0.5) * in_size / out_size - 0.5, 0.0)


def _neighbours(i, in_size, out_size, align_corners):
    """(lower index, upper index, weight of lower, weight of upper) for output index i."""
    r = source_coordinate(i, in_size, out_size, align_corners)
    r0 = int(r)
    r1 = min(r0 + 1, in_size - 1)
    t = r - r0
    return r0, r1, 1.0 - t, t


def _bilinear_taps(in_hw, out_hw, align_corners):
    """For each output (i, j): the four (row, column, weight) taps it blends."""
    for i in range(out_hw[0]):
        h0, h1, a0, a1 = _neighbours(i, in_hw[0], out_hw[0], align_corners)
        for j in range(out_hw[1]):
            w0, w1, b0, b1 = _neighbours(j, in_hw[1], out_hw[1], align_corners)
            yield i, j, ((h0, w0, a0 * b0), (h0, w1, a0 * b1), (h1, w0, a1 * b0), (h1, w1, a1 * b1))


def upsample_bilinear2d_forward(x, out_hw, align_corners):
    N, C, H, W = x.shape
    y = np.zeros((N, C) + tuple(out_hw), np.float64)
    for i, j, taps in _bilinear_taps((H, W), out_hw, align_corners):
        for h, w, weight in taps:
            y[:, :, i, j] += weight * x[:, :, h, w]
    return y.astype(x.dtype)


def upsample_bilinear2d_backward(dy, x_shape, align_corners):
    """Each output's gradient flows back to its four taps, times their weights."""
    dx = np.zeros(x_shape, np.float64)
    for i, j, taps in _bilinear_taps(x_shape[2:], dy.shape[2:], align_corners):
        for h, w, weight in taps:
            dx[:, :, h, w] += weight * dy[:, :, i, j]
    return dx.astype(dy.dtype)

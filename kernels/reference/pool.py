"""NumPy reference of 2-D max and average pooling (NCHW, ceil_mode=False): one window at a time.

    OH = (H + 2·ph − kh) // sh + 1          (the same for W)
    window (oh, ow) = rows oh·sh − ph … oh·sh − ph + kh − 1, columns likewise
    max:  y = max over the window's real pixels (padding never wins); argmax = h·W + w of the first maximum
    avg:  y = Σ window / (kh·kw)            (count_include_pad: padding counts as zeros)
          y = Σ window / (real pixels)      (otherwise)
"""
import numpy as np


def output_size(size, kernel, stride, padding):
    return (size + 2 * padding - kernel) // stride + 1


def _windows(x_shape, kernel, stride, padding):
    """Yield (oh, ow, rows, cols): each output position with the input rows/columns of its window (clipped)."""
    _, _, H, W = x_shape
    OH, OW = (output_size(s, k, st, p) for s, k, st, p in zip((H, W), kernel, stride, padding))
    for oh in range(OH):
        h0 = oh * stride[0] - padding[0]
        rows = np.arange(max(h0, 0), min(h0 + kernel[0], H))
        for ow in range(OW):
            w0 = ow * stride[1] - padding[1]
            cols = np.arange(max(w0, 0), min(w0 + kernel[1], W))
            yield oh, ow, rows, cols


def _out_shape(x_shape, kernel, stride, padding):
    N, C, H, W = x_shape
    return (N, C, output_size(H, kernel[0], stride[0], padding[0]), output_size(W, kernel[1], stride[1], padding[1]))


def max_pool2d_forward(x, kernel, stride, padding):
    y = np.empty(_out_shape(x.shape, kernel, stride, padding), x.dtype)
    argmax = np.empty(y.shape, np.int32)
    W = x.shape[3]
    for oh, ow, rows, cols in _windows(x.shape, kernel, stride, padding):
        window = x[:, :, rows[:, None], cols[None, :]].reshape(x.shape[0], x.shape[1], -1)
        best = window.argmax(axis=2)                      # first maximum, row-major in the window
        y[:, :, oh, ow] = np.take_along_axis(window, best[..., None], 2)[..., 0]
        argmax[:, :, oh, ow] = rows[best // len(cols)] * W + cols[best % len(cols)]
    return y, argmax


def max_pool2d_backward(dy, argmax, x_shape):
    """Each output's gradient goes to its winner (added up when windows overlap)."""
    N, C, H, W = x_shape
    dx = np.zeros((N, C, H * W), dy.dtype)
    for n in range(N):
        for c in range(C):
            np.add.at(dx[n, c], argmax[n, c].ravel(), dy[n, c].ravel())
    return dx.reshape(x_shape)


def _divisor(rows, cols, kernel, count_include_pad):
    return kernel[0] * kernel[1] if count_include_pad else len(rows) * len(cols)


def avg_pool2d_forward(x, kernel, stride, padding, count_include_pad):
    y = np.empty(_out_shape(x.shape, kernel, stride, padding), x.dtype)
    for oh, ow, rows, cols in _windows(x.shape, kernel, stride, padding):
        total = x[:, :, rows[:, None], cols[None, :]].sum(axis=(2, 3))
        y[:, :, oh, ow] = total / _divisor(rows, cols, kernel, count_include_pad)
    return y


def avg_pool2d_backward(dy, x_shape, kernel, stride, padding, count_include_pad):
    """Each output's gradient is shared equally by the real pixels of its window."""
    dx = np.zeros(x_shape, dy.dtype)
    for oh, ow, rows, cols in _windows(x_shape, kernel, stride, padding):
        share = dy[:, :, oh, ow] / _divisor(rows, cols, kernel, count_include_pad)
        dx[:, :, rows[:, None], cols[None, :]] += share[:, :, None, None]
    return dx

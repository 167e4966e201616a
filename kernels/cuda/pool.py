"""2-D max and average pooling on the GPU (NCHW, ceil_mode=False, padding ≤ kernel/2).

    OH = (H + 2·ph − kh) // sh + 1          (the same for W)
    window (oh, ow) = rows oh·sh − ph … oh·sh − ph + kh − 1, columns likewise
    max:  y = max over the window's real pixels;  argmax = h·W + w of the winner (padding never wins)
    avg:  y = Σ window / divisor,  divisor = kh·kw (count_include_pad) or the number of real pixels

One thread per output pixel (grid-stride over N·C·OH·OW; neighbouring threads take neighbouring ow, so
their reads of x are close together). The max pool's winner rule is the CPU's: the window's first real
pixel starts as the best, and a later pixel wins only when strictly greater.

Backward:
- max: each output adds its gradient to its winner, dx[plane, argmax] += dy. Windows overlap when
  stride < kernel, so two outputs can share a winner: the add is a cuda.atomic.add (for the usual
  kernel = stride pooling no two outputs share a pixel, and the order of the adds cannot matter);
- avg: one thread per input pixel gathers the shares of the outputs whose windows contain it (no atomics).
"""
import numpy as np
from numba import cuda, float32

from . import _launch as gpu
from .elementwise import zeros


@cuda.jit(device=True)
def window_origin(o, OH, OW, sh, sw, ph, pw):
    """Output o of the flat (planes, OH, OW) output -> its plane p and its window's top-left input pixel
    (h0, w0) (negative inside the padding)."""
    ow = o % OW
    oh = (o // OW) % OH
    return o // (OW * OH), oh * sh - ph, ow * sw - pw


@cuda.jit(cache=True)
def max_pool_forward_kernel(x, y, argmax, H, W, OH, OW, kh, kw, sh, sw, ph, pw):
    """y[p, oh, ow] = max of the window, argmax[p, oh, ow] = its h·W + w; p = n·C + c. All 1-D views."""
    for o in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        p, h0, w0 = window_origin(o, OH, OW, sh, sw, ph, pw)
        h_lo = max(h0, 0)
        w_lo = max(w0, 0)
        base = p * H * W
        best = x[base + h_lo * W + w_lo]
        best_index = h_lo * W + w_lo
        for h in range(h_lo, min(h0 + kh, H)):
            for w in range(w_lo, min(w0 + kw, W)):
                v = x[base + h * W + w]
                if v > best:
                    best = v
                    best_index = h * W + w
        y[o] = best
        argmax[o] = best_index


@cuda.jit(cache=True)
def max_pool_backward_kernel(dy, argmax, dx, HW, OHW):
    """dx[p·HW + argmax[o]] += dy[o] for every output o of plane p = o // OHW (atomic: winners may repeat)."""
    for o in range(cuda.grid(1), dy.size, cuda.gridsize(1)):
        cuda.atomic.add(dx, (o // OHW) * HW + argmax[o], dy[o])


@cuda.jit(device=True)
def window_divisor(h0, w0, kh, kw, H, W, count_include_pad):
    """The window's pixel count as a float32 (exact; an int64 divisor would turn float32 math into float64)."""
    if count_include_pad:
        return float32(kh * kw)
    return float32((min(h0 + kh, H) - max(h0, 0)) * (min(w0 + kw, W) - max(w0, 0)))


@cuda.jit(cache=True)
def avg_pool_forward_kernel(x, y, H, W, OH, OW, kh, kw, sh, sw, ph, pw, count_include_pad):
    """y[p, oh, ow] = Σ window / divisor."""
    for o in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        p, h0, w0 = window_origin(o, OH, OW, sh, sw, ph, pw)
        base = p * H * W
        total = y.dtype.type(0)   # a zero of y's dtype (an int 0 would make a float32 sum float64)
        for h in range(max(h0, 0), min(h0 + kh, H)):
            for w in range(max(w0, 0), min(w0 + kw, W)):
                total += x[base + h * W + w]
        y[o] = total / window_divisor(h0, w0, kh, kw, H, W, count_include_pad)


@cuda.jit(cache=True)
def avg_pool_backward_kernel(dy, dx, H, W, OH, OW, kh, kw, sh, sw, ph, pw, count_include_pad):
    """dx[p, h, w] = Σ over the outputs (oh, ow) whose window holds (h, w) of dy[p, oh, ow] / divisor.
    Window oh holds row h when oh·sh − ph ≤ h ≤ oh·sh − ph + kh − 1."""
    for i in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        w = i % W
        h = (i // W) % H
        p = i // (W * H)
        oh_lo = max(0, (h + ph - kh + sh) // sh)       # ⌈(h + ph − kh + 1) / sh⌉
        oh_hi = min(OH - 1, (h + ph) // sh)
        ow_lo = max(0, (w + pw - kw + sw) // sw)
        ow_hi = min(OW - 1, (w + pw) // sw)
        base = p * OH * OW
        total = dx.dtype.type(0)
        for oh in range(oh_lo, oh_hi + 1):
            for ow in range(ow_lo, ow_hi + 1):
                total += dy[base + oh * OW + ow] / window_divisor(oh * sh - ph, ow * sw - pw, kh, kw, H, W,
                                                                 count_include_pad)
        dx[i] = total


def _output_hw(x_shape, kernel, stride, padding):
    H, W = x_shape[2], x_shape[3]
    return ((H + 2 * padding[0] - kernel[0]) // stride[0] + 1,
            (W + 2 * padding[1] - kernel[1]) // stride[1] + 1)


def max_pool2d_forward(x, kernel, stride, padding):
    """x (N, C, H, W) -> y (N, C, OH, OW) and argmax int32 (N, C, OH, OW), the winner's index h·W + w."""
    N, C, H, W = x.shape
    OH, OW = _output_hw(x.shape, kernel, stride, padding)
    y = gpu.empty((N, C, OH, OW), x.dtype)
    argmax = gpu.empty((N, C, OH, OW), np.int32)
    if y.size:
        gpu.launch1d(max_pool_forward_kernel, y.size, gpu.flat(x), gpu.flat(y), gpu.flat(argmax), H, W, OH, OW,
                     *kernel, *stride, *padding)
    return y, argmax


def max_pool2d_backward(dy, argmax, x_shape):
    dx = zeros(x_shape, dy.dtype)
    if dy.size:
        gpu.launch1d(max_pool_backward_kernel, dy.size, gpu.flat(dy), gpu.flat(argmax), gpu.flat(dx),
                     x_shape[2] * x_shape[3], dy.shape[2] * dy.shape[3])
    return dx


def avg_pool2d_forward(x, kernel, stride, padding, count_include_pad):
    N, C, H, W = x.shape
    OH, OW = _output_hw(x.shape, kernel, stride, padding)
    y = gpu.empty((N, C, OH, OW), x.dtype)
    if y.size:
        gpu.launch1d(avg_pool_forward_kernel, y.size, gpu.flat(x), gpu.flat(y), H, W, OH, OW, *kernel, *stride,
                     *padding, bool(count_include_pad))
    return y


def avg_pool2d_backward(dy, x_shape, kernel, stride, padding, count_include_pad):
    N, C, H, W = x_shape
    dx = gpu.empty(x_shape, dy.dtype)
    if dx.size:
        gpu.launch1d(avg_pool_backward_kernel, dx.size, gpu.flat(dy), gpu.flat(dx), H, W, dy.shape[2], dy.shape[3],
                     *kernel, *stride, *padding, bool(count_include_pad))
    return dx

"""2-D upsampling on the GPU (NCHW): nearest with integer scales, and bilinear with PyTorch's mapping.

    nearest, scale (sh, sw):  y[n, c, i, j] = x[n, c, i // sh, j // sw]
                              dx[n, c, h, w] = Σ of dy over the sh × sw block that copied x[n, c, h, w]
    bilinear, output (OH, OW): row i reads input rows r0 = ⌊s(i)⌋ and r1 = min(r0 + 1, H − 1) with weights
        1 − t and t, t = s(i) − r0 (columns likewise with c0, c1, u):
        y[i, j] = (1−t)(1−u)·x[r0, c0] + (1−t)u·x[r0, c1] + t(1−u)·x[r1, c0] + tu·x[r1, c1]
    s(i) = i·(H − 1)/(OH − 1)                      align_corners=True (0 when OH = 1)
    s(i) = max((i + 0.5)·H/OH − 0.5, 0)            align_corners=False

Nearest with the channels last: y[n, i, j, c] = x[n, i // sh, j // sw, c], the same gathers over
(N, H, W, C) arrays. One thread per output pixel (forwards, nearest backward: one per input pixel, a gather). The bilinear
backward scatters each output's gradient into its four taps, which neighbouring outputs share: those adds
are cuda.atomic.add into a zeroed dx. The source coordinate is computed in the input's dtype (the CPU uses
float64): where the two round differently at a tap boundary, t ≈ 0 on one side and ≈ 1 on the other, so
the interpolated value is the same to rounding.
"""
from numba import cuda, float32

from . import _launch as gpu
from .elementwise import zeros



@cuda.jit(cache=True)
def nearest_forward_kernel(x, y, H, W, OH, OW, sh, sw):
    for o in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        j = o % OW
        i = (o // OW) % OH
        p = o // (OW * OH)
        y[o] = x[(p * H + i // sh) * W + j // sw]


@cuda.jit(cache=True)
def nearest_backward_kernel(dy, dx, H, W, sh, sw):
    OH = H * sh
    OW = W * sw
    for o in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        w = o % W
        h = (o // W) % H
        p = o // (W * H)
        total = dx.dtype.type(0)
        for a in range(sh):
            for b in range(sw):
                total += dy[(p * OH + h * sh + a) * OW + w * sw + b]
        dx[o] = total


@cuda.jit(cache=True)
def nearest_last_forward_kernel(x, y, H, W, C, OH, OW, sh, sw):
    for o in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        c = o % C
        j = (o // C) % OW
        i = (o // (C * OW)) % OH
        n = o // (C * OW * OH)
        y[o] = x[((n * H + i // sh) * W + j // sw) * C + c]


@cuda.jit(cache=True)
def nearest_last_backward_kernel(dy, dx, H, W, C, sh, sw):
    OH = H * sh
    OW = W * sw
    for o in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        c = o % C
        w = (o // C) % W
        h = (o // (C * W)) % H
        n = o // (C * W * H)
        total = dx.dtype.type(0)
        for a in range(sh):
            for b in range(sw):
                total += dy[((n * OH + h * sh + a) * OW + w * sw + b) * C + c]
        dx[o] = total


@cuda.jit(device=True)
def source_tap(i, in_size, ratio, align_corners, half):
    """(lower index, upper index, weight of the upper) of output index i along one axis.
    ratio = (in − 1)/(out − 1) with align_corners (0 when out = 1), else in/out; in the input's dtype."""
    fi = float32(i)                       # (an int64 operand would make the float32 math float64)
    if align_corners:
        s = fi * ratio
    else:
        s = max((fi + half) * ratio - half, half - half)
    lo = int(s)                           # s ≥ 0, so truncation is ⌊s⌋
    return lo, min(lo + 1, in_size - 1), s - float32(lo)


@cuda.jit(device=True)
def bilinear_source(o, H, W, OH, OW, rh, rw, align_corners, half):
    """Output o of the flat (planes, OH, OW) output -> the offset of its input plane, its two source rows r0, r1
    (r1 with weight t) and its two source columns c0, c1 (c1 with weight u)."""
    j = o % OW
    i = (o // OW) % OH
    r0, r1, t = source_tap(i, H, rh, align_corners, half)
    c0, c1, u = source_tap(j, W, rw, align_corners, half)
    return (o // (OW * OH)) * H * W, r0, r1, t, c0, c1, u


@cuda.jit(cache=True)
def bilinear_forward_kernel(x, y, H, W, OH, OW, rh, rw, align_corners):
    one, half = y.dtype.type(1), y.dtype.type(0.5)
    for o in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        base, r0, r1, t, c0, c1, u = bilinear_source(o, H, W, OH, OW, rh, rw, align_corners, half)
        top = (one - u) * x[base + r0 * W + c0] + u * x[base + r0 * W + c1]
        bottom = (one - u) * x[base + r1 * W + c0] + u * x[base + r1 * W + c1]
        y[o] = (one - t) * top + t * bottom


@cuda.jit(cache=True)
def bilinear_backward_kernel(dy, dx, H, W, OH, OW, rh, rw, align_corners):
    one, half = dx.dtype.type(1), dx.dtype.type(0.5)
    for o in range(cuda.grid(1), dy.size, cuda.gridsize(1)):
        base, r0, r1, t, c0, c1, u = bilinear_source(o, H, W, OH, OW, rh, rw, align_corners, half)
        g = dy[o]
        cuda.atomic.add(dx, base + r0 * W + c0, (one - t) * (one - u) * g)
        cuda.atomic.add(dx, base + r0 * W + c1, (one - t) * u * g)
        cuda.atomic.add(dx, base + r1 * W + c0, t * (one - u) * g)
        cuda.atomic.add(dx, base + r1 * W + c1, t * u * g)


def upsample_nearest2d_forward(x, scale):
    N, C, H, W = x.shape
    y = gpu.empty((N, C, H * scale[0], W * scale[1]), x.dtype)
    if y.size:
        gpu.launch1d(nearest_forward_kernel, y.size, gpu.flat(x), gpu.flat(y), H, W, y.shape[2], y.shape[3], *scale)
    return y


def upsample_nearest2d_backward(dy, scale):
    N, C, OH, OW = dy.shape
    dx = gpu.empty((N, C, OH // scale[0], OW // scale[1]), dy.dtype)
    if dx.size:
        gpu.launch1d(nearest_backward_kernel, dx.size, gpu.flat(dy), gpu.flat(dx), dx.shape[2], dx.shape[3], *scale)
    return dx


def upsample_nearest2d_last_forward(x, scale):
    N, H, W, C = x.shape
    y = gpu.empty((N, H * scale[0], W * scale[1], C), x.dtype)
    if y.size:
        gpu.launch1d(nearest_last_forward_kernel, y.size, gpu.flat(x), gpu.flat(y), H, W, C, y.shape[1], y.shape[2],
                     *scale)
    return y


def upsample_nearest2d_last_backward(dy, scale):
    N, OH, OW, C = dy.shape
    dx = gpu.empty((N, OH // scale[0], OW // scale[1], C), dy.dtype)
    if dx.size:
        gpu.launch1d(nearest_last_backward_kernel, dx.size, gpu.flat(dy), gpu.flat(dx), dx.shape[1], dx.shape[2], C,
                     *scale)
    return dx


def _ratio(in_size, out_size, align_corners, dtype):
    if align_corners:
        return gpu.scalar((in_size - 1) / (out_size - 1) if out_size > 1 else 0.0, dtype)
    return gpu.scalar(in_size / out_size, dtype)


def upsample_bilinear2d_forward(x, out_hw, align_corners):
    N, C, H, W = x.shape
    OH, OW = out_hw
    y = gpu.empty((N, C, OH, OW), x.dtype)
    if y.size:
        gpu.launch1d(bilinear_forward_kernel, y.size, gpu.flat(x), gpu.flat(y), H, W, OH, OW,
                     _ratio(H, OH, align_corners, x.dtype), _ratio(W, OW, align_corners, x.dtype), bool(align_corners))
    return y


def upsample_bilinear2d_backward(dy, x_shape, align_corners):
    N, C, OH, OW = dy.shape
    H, W = x_shape[2], x_shape[3]
    dx = zeros(x_shape, dy.dtype)
    if dy.size:
        gpu.launch1d(bilinear_backward_kernel, dy.size, gpu.flat(dy), gpu.flat(dx), H, W, OH, OW,
                     _ratio(H, OH, align_corners, dy.dtype), _ratio(W, OW, align_corners, dy.dtype),
                     bool(align_corners))
    return dx

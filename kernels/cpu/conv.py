"""2-D convolution, transposed convolution and constant padding on the CPU (NCHW; and a channels-last conv).

Convolution, x (N, C, H, W), w (F, C/G, KH, KW), G groups, stride s, padding p, dilation d:

    y[n, f, oh, ow] = b[f] + Σ_{c, i, j} w[f, c, i, j] · x[n, g·C/G + c, oh·s + i·d − p, ow·s + j·d − p]

(g = f // (F/G) is the group of filter f; x is 0 outside the image), OH = (H + 2p − d·(KH − 1) − 1) // s + 1.
Its gradients are the same sums read backwards: dx scatters dy through the filters, dw correlates dy with x,
db = Σ_{n, oh, ow} dy.

Four algorithms, chosen by the shape of the problem (`_algorithm`):

- **Winograd F(2×2, 3×3)** for 3×3, stride-1 convs with enough channels (where the FLOPs are: the 64 → 64
  conv of the tutorial is 90 % of its arithmetic): 16 GEMMs between transformed filters and transformed
  input tiles, 2.25× fewer multiply-adds than im2col + GEMM. See its section below.
- **im2col + GEMM** (the general case). `_im2col` copies every input window of an image into a column of a matrix
  cols[n] (C·KH·KW, OH·OW); then, per image and group, y[n] (F/G, OH·OW) = W (F/G, C/G·KH·KW) @ cols[n]
  is one BLAS GEMM (kernels/cpu/gemm.py: one-thread OpenBLAS calls split over our threads) that
  writes straight into the NCHW output: no transposition pass. The weight gradient is
  dW = Σₙ dy[n] @ cols[n]ᵀ and the input gradient is dcols[n] = Wᵀ @ dy[n], which `_col2im` adds back into
  the image. The Numba kernels only move memory: `_im2col` is parallel over the (image, row) pairs of cols
  and `_col2im` over the (n, c) planes of dx, so no two threads ever write the same element. The batch is
  cut into chunks of a few images so that cols stays under `COLS_BUDGET_BYTES`: small enough to stay in the
  L3 cache between im2col writing it and the GEMM reading it, and it lives in a workspace buffer
  (kernels/cpu/workspace.py) reused by every chunk, layer and step instead of a fresh allocation; so do
  the big outputs (y, dx), recycled from an earlier step when nothing refers to them any more.
- **1×1, stride 1, no padding, no groups**: x is already its own `cols`: per image y = W @ x (C, H·W).
- **Direct, one input channel per filter** (C/G = 1: depthwise convs with G = C, and a first layer on a
  grey image, C = 1): each filter reads a single plane, so im2col would copy the input KH·KW times to feed
  a GEMM with an inner dimension of KH·KW. Such a conv is memory bound (9 multiply-adds per output for a
  3×3), so the kernels make one pass over each big array: the forward builds each output plane in a
  buffer of its thread (bias, the KH·KW shifted planes, the ReLU) and writes it once; the weight gradient
  reads dy (and the ReLU mask) once, and correlates each plane with the input plane. Parallel over output
  planes (forward), over input planes (dx) and over filters (dw), each thread writing only its own.

**Fused conv + bias + ReLU** (`conv2d_bias_relu_forward/backward`, used by the Conv2D layer with
activation="relu"): the bias and the ReLU are applied to each chunk (GEMM, Winograd) or plane (direct) of the
output while it is in cache, instead of two more passes over the whole output; the backward reads the
ReLU's mask from the output itself (y > 0 exactly where the pre-activation is > 0), so the pre-activation is
never stored, and masks dy as it reads it for the conv's gradients. For the tutorial's first layer
(32×64×98×98 float32 = 79 MB) that saves two passes over 79 MB and one 79 MB array forward, and as much
backward.

Transposed convolution is the adjoint of convolution: its forward is conv2d's input gradient (col2im)
and its backward is conv2d's forward (dx) and conv2d's weight gradient (dw), so it reuses those kernels.

**Channels last** (`conv2d_channels_last_forward/backward`, the section at the end of this file): the same
convolution on (N, H, W, C) arrays, for MobileNet's 1×1 and depthwise convs, which run faster in that layout.
"""
import threading

import numba
import numpy as np
from numba import njit, prange

from . import threads
from .activation import FUSED_CODES, fused_activate
from .gemm import matmul
from .workspace import output, scratch

NO_ACTIVATION = FUSED_CODES[None]
COLS_BUDGET_BYTES = 16 * 2**20  # im2col (and Winograd) matrices are built this many bytes of images at a time


def conv_output_size(size, kernel, stride, padding, dilation):
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv_transpose_output_size(size, kernel, stride, padding, output_padding, dilation):
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


# ---------------------------------------------------------------------- public functions (the contract)
#
# `padding` is (ph, pw), or (top, bottom, left, right) (ASYMMETRIC_PADDING): the kernels take the top and
# left padding and the output's size, and read every pixel outside the input as 0, so an uneven padding
# (Keras' 'same' at stride 2 pads only the bottom and right) needs no pad op and no padded copy of the whole
# input (the direct kernels pad each plane in a buffer of their own, as for any padding).

ASYMMETRIC_PADDING = True


def _geometry(x_shape, w_shape, stride, padding, dilation):
    """-> the (top, left) padding the kernels take, and the output's shape (N, F, OH, OW)."""
    N, _, H, W = x_shape
    F, _, KH, KW = w_shape
    top, bottom, left, right = padding if len(padding) == 4 else (padding[0], padding[0], padding[1], padding[1])
    OH = (H + top + bottom - dilation[0] * (KH - 1) - 1) // stride[0] + 1
    OW = (W + left + right - dilation[1] * (KW - 1) - 1) // stride[1] + 1
    return (top, left), (N, F, OH, OW)


def _top_left(padding):
    return (padding[0], padding[2]) if len(padding) == 4 else padding


def conv2d_forward(x, w, b, stride, padding, dilation, groups):
    """x (N, C, H, W), w (F, C/G, KH, KW), b (F,) or None -> y (N, F, OH, OW)."""
    return conv2d_bias_act_forward(x, w, b, stride, padding, dilation, groups, None)


def conv2d_backward(dy, x, w, stride, padding, dilation, groups, need_dx, need_dw, need_db):
    """dy (N, F, OH, OW) -> (dx like x, dw like w, db (F,)); None for what is not needed."""
    x, w = np.ascontiguousarray(x), np.ascontiguousarray(w)
    return _backward(np.ascontiguousarray(dy), None, x, x.shape, w, w.shape, stride, _top_left(padding), dilation,
                     groups, need_dx, need_dw, need_db)


def conv2d_bias_relu_forward(x, w, b, stride, padding, dilation, groups):
    """y = relu(conv2d(x, w) + b) (b may be None), the bias and ReLU applied in the conv's own pass."""
    return conv2d_bias_act_forward(x, w, b, stride, padding, dilation, groups, "relu")


def conv2d_bias_act_forward(x, w, b, stride, padding, dilation, groups, activation):
    """y = act(conv2d(x, w) + b), act None, "relu" or "relu6" (b may be None), applied in the conv's own
    pass: a convolution with a batch norm folded into it, for inference (layers.Conv2D.forward_folded)."""
    return _conv(np.ascontiguousarray(x), np.ascontiguousarray(w), b, FUSED_CODES[activation], stride, padding,
                 dilation, groups)


def conv2d_bias_relu_backward(dy, y, x, w, stride, padding, dilation, groups, need_dx, need_dw, need_db):
    """Gradients of y = relu(conv2d(x, w) + b), given dy and the output y (not the pre-activation z):
    dz = dy · [y > 0] (relu(z) > 0 exactly where z > 0), then conv2d's gradients of dz -> (dx, dw, db)."""
    x, w = np.ascontiguousarray(x), np.ascontiguousarray(w)
    return _backward(np.ascontiguousarray(dy), np.ascontiguousarray(y), x, x.shape, w, w.shape,
                     stride, _top_left(padding), dilation, groups, need_dx, need_dw, need_db)


def conv2d_bias_relu_maxpool2_forward(x, w, b, stride, padding, dilation, groups):
    """max_pool2d(relu(conv2d(x, w) + b), 2) -> (N, F, OH // 2, OW // 2): the 2×2 max pooling taken as each
    piece of the conv's output is made, so the full-size output is never written (inference: the pooled
    map is all the next layer needs). pool(relu(z + b)) = relu(max(z) + b), ReLU and + b being monotone.
    Winograd's 2×2 output tiles are exactly the pooling windows; the direct kernel pools its wide plane
    buffer; the other algorithms run the conv, then the pooling kernel."""
    x, w = np.ascontiguousarray(x), np.ascontiguousarray(w)
    N, F = x.shape[0], w.shape[0]
    padding, y_shape = _geometry(x.shape, w.shape, stride, padding, dilation)
    pooled = output((N, F, y_shape[2] // 2, y_shape[3] // 2), x.dtype)
    algorithm = _algorithm(x.shape, w.shape, y_shape, stride, padding, groups, dilation)
    relu = FUSED_CODES["relu"]
    if algorithm == "direct":
        _direct_forward(x, w, _bias_or_zeros(b, F, x.dtype), relu, stride, padding, dilation, pooled, True)
    elif algorithm == "winograd":
        _winograd_forward(x, w, _bias_or_zeros(b, F, x.dtype), relu, padding, pooled, y_shape)
    else:
        from .pool import max_pool2d_forward
        pooled[...] = max_pool2d_forward(_conv(x, w, b, relu, stride, padding, dilation, groups, y_shape),
                                         (2, 2), (2, 2), (0, 0))[0]
    return pooled


def conv_transpose2d_forward(x, w, b, stride, padding, output_padding, dilation, groups):
    """x (N, C, H, W), w (C, F/G, KH, KW), b (F,) or None -> y (N, F, OH, OW),
    OH = (H − 1)·s − 2p + d·(KH − 1) + output_padding + 1.

    y is the input gradient of the convolution y' = conv2d(y, w) (which maps F channels to C): col2im."""
    x, w = np.ascontiguousarray(x), np.ascontiguousarray(w)
    N, _, H, W = x.shape
    _, Fg, KH, KW = w.shape
    if _is_pixel_shuffle(w.shape, stride, padding, output_padding, dilation, groups):
        return _shuffle_transpose_forward(x, w, b)
    OH = conv_transpose_output_size(H, KH, stride[0], padding[0], output_padding[0], dilation[0])
    OW = conv_transpose_output_size(W, KW, stride[1], padding[1], output_padding[1], dilation[1])
    y = _backward(x, None, None, (N, Fg * groups, OH, OW), w, w.shape, stride, padding, dilation, groups,
                  True, False, False)[0]
    if b is not None:
        _bias_act(y.reshape(N, y.shape[1], OH * OW), _bias_or_zeros(b, y.shape[1], y.dtype), NO_ACTIVATION)
    return y


def conv_transpose2d_backward(dy, x, w, stride, padding, output_padding, dilation, groups,
                              need_dx, need_dw, need_db):
    """dy (N, F, OH, OW) -> (dx like x, dw like w, db (F,)).

    dx = conv2d(dy, w) (kept to x's size: with output_padding ≥ stride, allowed when smaller than the
    dilation, conv2d gives extra rows), dw = conv2d's weight gradient with the roles of x and dy swapped."""
    dy, x, w = np.ascontiguousarray(dy), np.ascontiguousarray(x), np.ascontiguousarray(w)
    if _is_pixel_shuffle(w.shape, stride, padding, output_padding, dilation, groups):
        return _shuffle_transpose_backward(dy, x, w, need_dx, need_dw, need_db)
    dx = dw = db = None
    if need_dx:
        N, C, H, W = x.shape
        OH = conv_output_size(dy.shape[2], w.shape[2], stride[0], padding[0], dilation[0])
        OW = conv_output_size(dy.shape[3], w.shape[3], stride[1], padding[1], dilation[1])
        dx = _conv(dy, w, None, NO_ACTIVATION, stride, padding, dilation, groups, (N, C, OH, OW))
        if (OH, OW) != (H, W):
            dx = np.ascontiguousarray(dx[:, :, :H, :W])
    if need_dw:
        # conv2d's weight gradient for an input dy and an output gradient x
        dw = _backward(x, None, dy, dy.shape, None, w.shape, stride, padding, dilation, groups,
                       False, True, False)[1]
    if need_db:
        db = dy.sum(axis=(0, 2, 3))
    return dx, dw, db


# A transposed conv whose stride equals its kernel (no padding, dilation or groups: the U-Net's 2×2,
# stride-2 upsampling) puts each input pixel's K×K patch on its own block of the output, with no overlap:
#
#     y[n, f, h·K + i, w·K + j] = b[f] + Σ_c x[n, c, h, w] · w[c, f, i, j]
#
# i.e. one GEMM Z[n] (F·K·K, H·W) = Wᵀ (F·K·K, C) @ x[n] (C, H·W) and a "pixel shuffle" that moves each row
# (f, i, j) of Z to its strided place in y. The backward unshuffles dy the same way (dZ) and is two GEMMs:
# dx[n] = W @ dZ[n], dW = Σₙ x[n] @ dZ[n]ᵀ. The general path (col2im, and im2col twice in the backward)
# took 3× as long for the U-Net's two upsamplings.

def _is_pixel_shuffle(w_shape, stride, padding, output_padding, dilation, groups):
    return (tuple(stride) == tuple(w_shape[2:]) and tuple(padding) == (0, 0) and tuple(output_padding) == (0, 0)
            and tuple(dilation) == (1, 1) and groups == 1)


def _shuffle_transpose_forward(x, w, b):
    N, C, H, W = x.shape
    _, F, KH, KW = w.shape
    Z = matmul(w.reshape(C, F * KH * KW).T, x.reshape(N, C, H * W))  # (N, F·KH·KW, H·W)
    y = output((N, F, H * KH, W * KW), x.dtype)
    _pixel_shuffle(Z.reshape(N, F, KH, KW, H, W), _bias_or_zeros(b, F, x.dtype), y)
    return y


def _shuffle_transpose_backward(dy, x, w, need_dx, need_dw, need_db):
    N, C, H, W = x.shape
    _, F, KH, KW = w.shape
    dZ = scratch("conv.unshuffled", (N, F, KH, KW, H, W), dy.dtype)
    _pixel_unshuffle(dy, dZ)
    dZ = dZ.reshape(N, F * KH * KW, H * W)
    dx = dw = db = None
    if need_dx:  # dx[n] = W (C, F·KH·KW) @ dZ[n]
        dx = output(x.shape, dy.dtype)
        matmul(w.reshape(C, F * KH * KW), dZ, out=dx.reshape(N, C, H * W))
    if need_dw:  # dW = Σₙ x[n] (C, H·W) @ dZ[n]ᵀ (H·W, F·KH·KW)
        dw = matmul(x.reshape(N, C, H * W), dZ.transpose(0, 2, 1)).sum(axis=0).reshape(w.shape)
    if need_db:
        db = dy.sum(axis=(0, 2, 3))
    return dx, dw, db


@njit(cache=True, parallel=True)
def _pixel_shuffle(Z, b, y):
    """y[n, f, h·KH + i, w·KW + j] = Z[n, f, i, j, h, w] + b[f]; parallel over the (n, f) planes."""
    N, F, KH, KW, H, W = Z.shape
    for plane in prange(N * F):
        n, f = plane // F, plane % F
        for h in range(H):
            for i in range(KH):
                row = y[n, f, h * KH + i]
                for j in range(KW):
                    src = Z[n, f, i, j, h]
                    for w_ in range(W):
                        row[w_ * KW + j] = src[w_] + b[f]


@njit(cache=True, parallel=True)
def _pixel_unshuffle(dy, dZ):
    """dZ[n, f, i, j, h, w] = dy[n, f, h·KH + i, w·KW + j]; parallel over the (n, f) planes."""
    N, F, KH, KW, H, W = dZ.shape
    for plane in prange(N * F):
        n, f = plane // F, plane % F
        for h in range(H):
            for i in range(KH):
                row = dy[n, f, h * KH + i]
                for j in range(KW):
                    dst = dZ[n, f, i, j, h]
                    for w_ in range(W):
                        dst[w_] = row[w_ * KW + j]


def pad2d_forward(x, pad, value):
    """x (N, C, H, W), pad = (left, right, top, bottom) -> y (N, C, H + top + bottom, W + left + right).
    y is a recycled array (workspace.py), written plane by plane in parallel (NumPy's slice copy is
    one-threaded: half the speed on 2 cores for the regressor's stride-2 'same' pads)."""
    left, right, top, bottom = pad
    N, C, H, W = x.shape
    y = output((N, C, H + top + bottom, W + left + right), x.dtype)
    _pad_planes(np.ascontiguousarray(x).reshape(N * C, H, W), top, left, x.dtype.type(value),
                y.reshape(N * C, y.shape[2], y.shape[3]))
    return y


def pad2d_backward(dy, pad):
    """The gradient of padding is the slice of dy that covers the original image."""
    left, right, top, bottom = pad
    N, C, H, W = dy.shape
    dx = output((N, C, H - top - bottom, W - left - right), dy.dtype)
    _crop_planes(np.ascontiguousarray(dy).reshape(N * C, H, W), top, left, dx.reshape(N * C, dx.shape[2], dx.shape[3]))
    return dx


@njit(cache=True, parallel=True)
def _pad_planes(x, top, left, value, y):
    """y[p] = x[p] placed at (top, left), `value` around it; parallel over the planes p."""
    P, H, W = x.shape
    for p in prange(P):
        y[p, :top] = value
        y[p, top + H:] = value
        for h in range(H):
            row = y[p, top + h]
            row[:left] = value
            row[left:left + W] = x[p, h]
            row[left + W:] = value


@njit(cache=True, parallel=True)
def _crop_planes(dy, top, left, dx):
    """dx[p] = the (H, W) window of dy[p] at (top, left); parallel over the planes p."""
    P, H, W = dx.shape
    for p in prange(P):
        for h in range(H):
            dx[p, h] = dy[p, top + h, left:left + W]


# ---------------------------------------------------------------------- dispatch

WINOGRAD_MIN_CHANNELS = 16  # below this many input channels and filters, im2col's GEMM is the better one


def _algorithm(x_shape, w_shape, y_shape, stride, padding, groups, dilation):
    """The algorithm for these shapes: "direct" (one input channel per filter), "matmul" (plain 1×1),
    "winograd" (3×3, stride 1, enough channels), "im2col"."""
    F, Cg, KH, KW = w_shape
    if Cg == 1:
        return "direct"
    pointwise = KH == KW == 1 and stride == (1, 1) and padding == (0, 0)
    if groups == 1 and pointwise and tuple(x_shape[2:]) == tuple(y_shape[2:]):
        return "matmul"
    # Winograd's tiles take the padding as symmetric: the output is H + 2·ph − 2 rows (stride 1)
    symmetric = y_shape[2] == x_shape[2] + 2 * padding[0] - 2 and y_shape[3] == x_shape[3] + 2 * padding[1] - 2
    if (KH, KW) == (3, 3) and stride == dilation == (1, 1) and groups == 1 and symmetric \
            and min(Cg, F) >= WINOGRAD_MIN_CHANNELS and padding[0] <= 2 and padding[1] <= 2:
        return "winograd"
    return "im2col"


def _bias_or_zeros(b, F, dtype):
    return np.zeros(F, dtype) if b is None else np.ascontiguousarray(b, dtype=dtype)


def _conv(x, w, b, act, stride, padding, dilation, groups, y_shape=None):
    """y = act(conv2d(x, w) + b), act a code of FUSED_CODES (0: none); b may be None. Without y_shape, padding
    is either form of the contract's; with it, the (top, left) padding."""
    N, _, H, W = x.shape
    F, _, KH, KW = w.shape
    if y_shape is None:
        padding, y_shape = _geometry(x.shape, w.shape, stride, padding, dilation)
    y = output(y_shape, x.dtype)
    algorithm = _algorithm(x.shape, w.shape, y_shape, stride, padding, groups, dilation)
    if algorithm == "direct":  # the bias and the ReLU go into its row loop
        _direct_forward(x, w, _bias_or_zeros(b, F, x.dtype), act, stride, padding, dilation, y)
        return y
    P = y_shape[2] * y_shape[3]
    if algorithm == "matmul":
        matmul(w.reshape(F, -1), x.reshape(N, -1, P), out=y.reshape(N, F, P))
        if b is not None or act:
            _bias_act(y.reshape(N, F, P), _bias_or_zeros(b, F, x.dtype), act)
        return y
    if algorithm == "winograd":
        _winograd_forward(x, w, _bias_or_zeros(b, F, x.dtype), act, padding, y)
        return y
    Fg, K, chunks = _gemm_setup(x.shape, w.shape, P, groups, x.dtype)
    w_rows = w.reshape(F, K)
    for n0, n1 in chunks:
        cols = scratch("conv.cols", (n1 - n0, groups * K, P), x.dtype)
        _im2col(x[n0:n1], KH, KW, stride, padding, dilation, y_shape[2], y_shape[3], cols)
        y_chunk = y[n0:n1].reshape(n1 - n0, F, P)
        for g in range(groups):  # one GEMM per image: y[n, group g] = W_g @ cols[n, group g]
            matmul(w_rows[g * Fg:(g + 1) * Fg], cols[:, g * K:(g + 1) * K], out=y_chunk[:, g * Fg:(g + 1) * Fg])
        if b is not None or act:  # the epilogue, while the chunk of y is still in cache
            _bias_act(y_chunk, _bias_or_zeros(b, F, x.dtype), act)
    return y


def _backward(dy, y, x, x_shape, w, w_shape, stride, padding, dilation, groups, need_dx, need_dw, need_db):
    """Gradients of conv2d (x of shape x_shape, weights of shape w_shape) given dy, or, when y (the output of
    a fused conv + bias + ReLU) is given, given dz = dy · [y > 0]. x is needed only for dw, w only for dx.
    Returns (dx, dw, db), None for what is not needed."""
    N, F, OH, OW = dy.shape
    _, Cg, KH, KW = w_shape
    P = OH * OW
    dtype = dy.dtype
    algorithm = _algorithm(x_shape, w_shape, dy.shape, stride, padding, groups, dilation)
    dx = output(x_shape, dtype) if need_dx else None
    dw = np.zeros(w_shape, dtype) if need_dw else None
    bias_sums = np.empty((N, F), np.float64)  # Σ over each (n, f) plane of dz, summed over n for db

    if algorithm == "direct":
        masked = y is not None
        if need_dw:  # dw and the bias sums in one pass over dy (and y)
            _direct_weight_grad(dy, y if masked else dy, masked, x, stride, padding, dilation, dw,
                                bias_sums[0], dtype.type(0))
            db = bias_sums[0].astype(dtype) if need_db else None
        else:
            db = _bias_grad(dy, y, bias_sums) if need_db else None
        if need_dx:
            dz = dy
            if masked:
                dz = scratch("conv.dz", dy.shape, dtype)
                _relu_grad_planes(dy.reshape(N, F, P), y.reshape(N, F, P), dz.reshape(N, F, P), bias_sums)
            _direct_input_grad(dz, w, stride, padding, dilation, dx)
        return dx, dw, db

    if algorithm == "matmul":
        C = x_shape[1]
        dz = _masked_chunk(dy.reshape(N, F, P), y, 0, N, bias_sums, need_db)
        # Both GEMMs of an image run together on one thread, dz[n] read from cache by the second:
        # dx[n] = Wᵀ (C, F) @ dz[n] (F, HW), and this thread's dW += dz[n] (F, HW) @ x[n]ᵀ (HW, C)
        w_t = w.reshape(F, C).T
        x3 = x.reshape(N, C, P) if need_dw else None
        dx3 = dx.reshape(N, C, P) if need_dx else None
        dw_parts = {}  # thread -> its float64 share of dW

        def image(n):
            if need_dx:
                np.matmul(w_t, dz[n], out=dx3[n])
            if need_dw:
                if threading.get_ident() not in dw_parts:
                    dw_parts[threading.get_ident()] = np.zeros((F, C), np.float64)
                dw_parts[threading.get_ident()] += np.matmul(dz[n], x3[n].T, out=scratch("conv.dw_part", (F, C), dtype))

        threads.parallel_for(image, N)
        if need_dw:
            dw.reshape(F, C)[...] = np.sum(list(dw_parts.values()), axis=0)
        return dx, dw, (bias_sums.sum(axis=0).astype(dtype) if need_db else None)

    if algorithm == "winograd":
        _winograd_backward(dy, y, x, x_shape, w, w_shape, padding, dx, dw, bias_sums)
        return dx, dw, (bias_sums.sum(axis=0).astype(dtype) if need_db else None)

    Fg, K, chunks = _gemm_setup(x_shape, w_shape, P, groups, dtype)
    dw_rows = dw.reshape(F, K) if need_dw else None
    w_rows = w.reshape(F, K) if need_dx else None
    for n0, n1 in chunks:
        nb = n1 - n0
        dz = _masked_chunk(dy[n0:n1].reshape(nb, F, P), y, n0, n1, bias_sums, need_db)
        if need_dw:  # dW_g += Σₙ dz[n, g] @ cols[n, g]ᵀ
            cols = scratch("conv.cols", (nb, groups * K, P), dtype)
            _im2col(x[n0:n1], KH, KW, stride, padding, dilation, OH, OW, cols)
            for g in range(groups):
                dw_rows[g * Fg:(g + 1) * Fg] += matmul(
                    dz[:, g * Fg:(g + 1) * Fg], cols[:, g * K:(g + 1) * K].transpose(0, 2, 1)).sum(axis=0)
        if need_dx:  # dcols[n, g] = W_gᵀ @ dz[n, g], added back into the image by col2im
            dcols = scratch("conv.dcols", (nb, groups * K, P), dtype)
            for g in range(groups):
                matmul(w_rows[g * Fg:(g + 1) * Fg].T, dz[:, g * Fg:(g + 1) * Fg], out=dcols[:, g * K:(g + 1) * K])
            _col2im(dcols, KH, KW, stride, padding, dilation, OH, OW, dx[n0:n1])
    return dx, dw, (bias_sums.sum(axis=0).astype(dtype) if need_db else None)


def _masked_chunk(dy3, y, n0, n1, bias_sums, need_sums):
    """dz for images n0..n1 as (n, F, P): dy itself, or dy · [y > 0] in a scratch buffer; and, when asked (or
    free), the sums of its planes into bias_sums[n0:n1]."""
    if y is None:
        if need_sums:
            _plane_sums(dy3, bias_sums[n0:n1])
        return dy3
    dz = scratch("conv.dz", dy3.shape, dy3.dtype)
    _relu_grad_planes(dy3, y[n0:n1].reshape(dy3.shape), dz, bias_sums[n0:n1])
    return dz


def _bias_grad(dy, y, bias_sums):
    """db = Σ_{n, oh, ow} dz, dz = dy (y None) or dy · [y > 0]."""
    N, F = dy.shape[0], dy.shape[1]
    dy3 = dy.reshape(N, F, -1)
    _masked_chunk(dy3, y, 0, N, bias_sums, True)
    return bias_sums.sum(axis=0).astype(dy.dtype)


def _image_chunks(N, bytes_per_image):
    """Split the batch into runs of images [n0, n1) whose im2col matrix fits COLS_BUDGET_BYTES."""
    per_chunk = max(1, COLS_BUDGET_BYTES // max(1, bytes_per_image))
    return [(n0, min(N, n0 + per_chunk)) for n0 in range(0, N, per_chunk)]


def _gemm_setup(x_shape, w_shape, pixels, groups, dtype):
    """Shapes of the GEMMs: per image and group, W_g (F/G, K) @ cols[n, g] (K, pixels), K = C/G·KH·KW."""
    F, Cg, KH, KW = w_shape
    K = Cg * KH * KW
    chunks = _image_chunks(x_shape[0], groups * K * pixels * np.dtype(dtype).itemsize)
    return F // groups, K, chunks


# ---------------------------------------------------------------------- epilogues: bias, ReLU, mask, sums
#
# y, dy, dz are seen as (N, F, P) (P = OH·OW); each thread takes whole (n, f) planes.

@njit(cache=True, parallel=True)
def _bias_act(y, b, act):
    """y[n, f] = act(y[n, f] + b[f]) in place (act: a FUSED_CODES code; NaN passes through)."""
    N, F, P = y.shape
    for plane in prange(N * F):
        n, f = plane // F, plane % F
        bias = b[f]
        if act:
            for p in range(P):
                y[n, f, p] = fused_activate(y[n, f, p] + bias, act)
        else:
            for p in range(P):
                y[n, f, p] += bias


@njit(cache=True, parallel=True, fastmath={"reassoc", "contract"})
def _relu_grad_planes(dy, y, dz, sums):
    """dz = dy · [y > 0] and sums[n, f] = Σ_p dz[n, f, p] (float64; reassociated so that it vectorizes)."""
    N, F, P = dy.shape
    for plane in prange(N * F):
        n, f = plane // F, plane % F
        total = 0.0
        for p in range(P):
            v = dy[n, f, p] if y[n, f, p] > 0 else 0
            dz[n, f, p] = v
            total += v
        sums[n, f] = total


@njit(cache=True, parallel=True, fastmath={"reassoc", "contract"})
def _plane_sums(dy, sums):
    """sums[n, f] = Σ_p dy[n, f, p], in float64."""
    N, F, P = dy.shape
    for plane in prange(N * F):
        n, f = plane // F, plane % F
        total = 0.0
        for p in range(P):
            total += dy[n, f, p]
        sums[n, f] = total


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


@njit(cache=True, fastmath={"reassoc", "contract"})
def _relu_grad_row(dz, dy, y, masked, step):
    """dz[k·step] = dy[k] · [y[k] > 0] (or dy[k] when not masked); returns Σ dz in float64."""
    total = 0.0
    if step == 1 and masked:
        for k in range(dy.size):
            v = dy[k] if y[k] > 0 else 0
            dz[k] = v
            total += v
    elif step == 1:
        for k in range(dy.size):
            dz[k] = dy[k]
            total += dy[k]
    else:
        for k in range(dy.size):
            v = dy[k] if (y[k] > 0 or not masked) else 0
            dz[k * step] = v
            total += v
    return total


# ---------------------------------------------------------------------- im2col + GEMM

@njit(cache=True, parallel=True)
def _im2col(x, KH, KW, stride, padding, dilation, OH, OW, cols):
    """x (N, C, H, W) -> cols (N, C·KH·KW, OH·OW), for each image one row per (c, i, j), one column per output:

        cols[n, (c·KH + i)·KW + j, oh·OW + ow] = x[n, c, oh·sh + i·dil_h − ph, ow·sw + j·dil_w − pw]

    (0 where that pixel is padding).

    Parallel over the (n, row) pairs: each thread fills whole rows, left to right; the KH·KW rows of a plane
    are neighbours, so a thread reads each input plane from its cache KH·KW times."""
    N, C, H, W = x.shape
    (sh, sw), (ph, pw), (dil_h, dil_w) = stride, padding, dilation
    R = C * KH * KW
    for task in prange(N * R):
        n, row = task // R, task % R
        c, i, j = row // (KH * KW), (row // KW) % KH, row % KW
        oh_lo, oh_hi = _valid_range(i * dil_h - ph, sh, H, OH)
        ow_lo, ow_hi = _valid_range(j * dil_w - pw, sw, W, OW)
        iw_lo = ow_lo * sw + j * dil_w - pw
        for oh in range(OH):
            out = cols[n, row, oh * OW:(oh + 1) * OW]
            if oh < oh_lo or oh >= oh_hi:
                out[:] = 0
                continue
            out[:ow_lo] = 0
            _copy_row(out[ow_lo:ow_hi], x[n, c, oh * sh + i * dil_h - ph, iw_lo:], sw)
            out[ow_hi:] = 0


@njit(cache=True, parallel=True)
def _col2im(cols, KH, KW, stride, padding, dilation, OH, OW, dx):
    """The adjoint of _im2col: dx[n, c, ih, iw] = the sum of every entry of cols that _im2col copied from
    (ih, iw) (dx is overwritten: each plane is zeroed first, while it is in this thread's cache).

    Parallel over the (n, c) planes of dx: a thread adds only into its own plane, so there are no races."""
    N, C, H, W = dx.shape
    (sh, sw), (ph, pw), (dil_h, dil_w) = stride, padding, dilation
    for plane in prange(N * C):
        n, c = plane // C, plane % C
        dx[n, c] = 0
        for i in range(KH):
            oh_lo, oh_hi = _valid_range(i * dil_h - ph, sh, H, OH)
            for j in range(KW):
                ow_lo, ow_hi = _valid_range(j * dil_w - pw, sw, W, OW)
                iw_lo = ow_lo * sw + j * dil_w - pw
                row = (c * KH + i) * KW + j
                for oh in range(oh_lo, oh_hi):
                    ih = oh * sh + i * dil_h - ph
                    _scatter_add_row(dx[n, c, ih, iw_lo:], cols[n, row, oh * OW + ow_lo:oh * OW + ow_hi], sw)


# ---------------------------------------------------------------------- Winograd F(2×2, 3×3)
#
# A 3×3, stride-1 conv computes each 2×2 block of outputs from a 4×4 tile of input (tiles overlap by 2).
# Winograd's minimal filtering (Lavin & Gray, 2016) does it with 16 multiplications per channel instead of
# 36: with the tile d (4×4) and the filter g (3×3),
#
#     y (2×2) = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A     Bᵀ = [1  0 −1  0]   G = [ 1    0    0 ]   Aᵀ = [1 1  1  0]
#                                                      [0  1  1  0]       [1/2  1/2  1/2]        [0 1 −1 −1]
#                                                      [0 −1  1  0]       [1/2 −1/2  1/2]
#                                                      [0  1  0 −1]       [ 0    0    1 ]
#
# and the sum over input channels moves inside, between the transforms: for each of the 16 positions ξ of
# the 4×4 transformed tile, M_ξ (F, tiles) = U_ξ (F, C) @ V_ξ (C, tiles), U = G g Gᵀ (the filters,
# transformed once per call), V = Bᵀ d B (every input tile). So the conv becomes 16 GEMMs with 2.25× fewer
# multiply-adds than im2col's one, and the transforms move 4× the input instead of im2col's 9×. The
# backward is the same three steps read backwards (each transform's adjoint is its transpose):
#
#     dM = A dY Aᵀ (per 2×2 block of dy),  dU_ξ = dM_ξ @ V_ξᵀ,  dV_ξ = U_ξᵀ @ dM_ξ,
#     dg = Gᵀ dU G,                        dd = B dV Bᵀ (added into the overlapping input tiles).
#
# For the tutorial's 64 → 64 conv that is 2.3 GFLOP of GEMM per pass instead of 5.2. The transforms'
# coefficients are 0, ±1 and ±1/2, so float32 results stay within a few ulps of im2col's. Used for 3×3,
# stride 1, no dilation, no groups, with at least WINOGRAD_MIN_CHANNELS channels in and out (the GEMMs'
# inner dimension is C, so they need a few). Tiles hanging over the padded input's bottom or right edge
# (odd output sizes) read zeros there and their extra outputs are dropped.
#
# How the work is cut: into pieces of a few rows of tiles, each piece run start to finish by one thread of
# kernels/cpu/threads.py — input transform, the 16 GEMMs, output transform — in buffers of that thread
# small enough to stay in its core's L2 cache (WINOGRAD_PIECE_BYTES for V and M together). Transforming
# the whole batch first and then multiplying (16 GEMMs over ~18,000 tiles for the tutorial) sent V and M
# through main memory, and one core's SGEMM fell from ~100 GFLOP/s (V of 0.5 MB) to 60–75 (V of 7–16 MB);
# the transforms, writing 16 strided streams, lost as much. The forward's pieces are any rows of tiles
# (they write disjoint rows of y). The backward's unit is an image: neighbouring tiles overlap in the input,
# so one image's input gradient is summed by one thread, in a padded plane buffer of its own; each thread
# also sums its own share of dU (float64), added up at the end.

WINOGRAD_PIECE_BYTES = 1 << 20  # V and M of one piece: about one core's L2 cache

_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
# G g Gᵀ for every 3×3 filter g at once: flattened row by row, vec(G g Gᵀ) = (G ⊗ G) vec(g), so the
# transformed filters are one GEMM (F·C, 9) @ (9, 16), and the gradient's Gᵀ dU G one (F·C, 16) @ (16, 9)
# (NumPy's stacked 4×3 @ 3×3 products took 1.7 ms for the tutorial's 64×64 filters). Through gemm.matmul,
# like every BLAS call of the kernels: a bare `@` here woke OpenBLAS's own threads, 50 % slower steps.
_GG = np.kron(_G, _G)  # (16, 9)


def _winograd_tiles(y_hw):
    """The number of 2×2 output tiles, down and across."""
    return (y_hw[0] + 1) // 2, (y_hw[1] + 1) // 2


def _winograd_filters(w):
    """U = G g Gᵀ for every (filter, channel) -> (16, F, C): the 16 GEMMs' left operands."""
    F, C = w.shape[0], w.shape[1]
    U = matmul(w.reshape(F * C, 9), _GG.T.astype(w.dtype))  # (F·C, 16): row f·C + c is G w[f, c] Gᵀ, flattened
    return np.ascontiguousarray(U.T.reshape(16, F, C))


def _winograd_piece_rows(C, F, TW, itemsize):
    """Rows of tiles per piece: V (16, C, slots) and M (16, F, slots) within WINOGRAD_PIECE_BYTES
    (TW + 1 slots per row of tiles, see the transforms)."""
    return max(1, WINOGRAD_PIECE_BYTES // (16 * (C + F) * (TW + 1) * itemsize))


def _winograd_forward(x, w, b, act, padding, y, pooled_from=None):
    """y = act(conv2d(x, w) + b) for 3×3, stride 1, piece by piece of tile rows (r = n·TH + th):
    V = input transform, M_ξ = U_ξ @ V_ξ (16 GEMMs), y = output transform (+ bias, activation). With
    pooled_from = the conv's output shape, y is its 2×2 max pooling instead (one value per whole tile)."""
    N, C = x.shape[0], x.shape[1]
    F = w.shape[0]
    TH, TW = _winograd_tiles(y.shape[2:] if pooled_from is None else pooled_from[2:])
    U = _winograd_filters(w)
    rows = _winograd_piece_rows(C, F, TW, x.dtype.itemsize)
    pieces = -(-N * TH // rows)

    def piece(i):
        r0, r1 = i * rows, min(N * TH, (i + 1) * rows)
        tiles = (r1 - r0) * (TW + 1)  # slots: TW tiles and one spare per row
        V = scratch("conv.winograd_v", (16, C, tiles), x.dtype)
        M = scratch("conv.winograd_m", (16, F, tiles), x.dtype)
        _winograd_input(x, padding[0], padding[1], TH, TW, r0, r1, V)
        np.matmul(U, V, out=M)
        if pooled_from is None:
            _winograd_output(M, b, act, TH, TW, r0, r1, y)
        else:
            _winograd_output_pooled(M, b, act, TH, TW, r0, r1, y)

    threads.parallel_for(piece, pieces)


def _winograd_backward(dy, y, x, x_shape, w, w_shape, padding, dx, dw, bias_sums):
    """conv2d's gradients for 3×3, stride 1, with dz = dy · [y > 0] when y is given (fused ReLU), else dy.
    Fills dx and dw (each when not None) and bias_sums (N, F), the sums of dz's planes. One image per task,
    in pieces of tile rows: dM = output-gradient transform, then dU += dM Vᵀ (V the input transform) and
    dV = Uᵀ dM, whose input-gradient transform is summed into the image's padded plane buffer."""
    N, F = dy.shape[0], dy.shape[1]
    C, H, W = w_shape[1], x_shape[2], x_shape[3]
    ph, pw = padding
    TH, TW = _winograd_tiles(dy.shape[2:])
    Ut = np.ascontiguousarray(_winograd_filters(w).transpose(0, 2, 1)) if dx is not None else None
    rows = _winograd_piece_rows(C, F, TW, dy.dtype.itemsize)
    masked = y is not None
    dU_parts = {}  # thread -> its float64 (16, F, C) share of dU

    def image(n):
        bias_sums[n] = 0.0
        if dx is not None:
            plane = scratch("conv.winograd_dx", (C, 2 * TH + 2, 2 * TW + 2), dy.dtype)
            plane[...] = 0
        if dw is not None:
            if threading.get_ident() not in dU_parts:  # this thread's first image
                dU_parts[threading.get_ident()] = np.zeros((16, F, C), np.float64)
            dU = dU_parts[threading.get_ident()]
        for th0 in range(0, TH, rows):
            r0, r1 = n * TH + th0, n * TH + min(TH, th0 + rows)
            tiles = (r1 - r0) * (TW + 1)  # slots: TW tiles and one spare per row
            dM = scratch("conv.winograd_m", (16, F, tiles), dy.dtype)
            _winograd_output_grad(dy, y if masked else dy, masked, TH, TW, r0, r1, dM, bias_sums)
            if dw is not None:  # dU_ξ += dM_ξ @ V_ξᵀ
                V = scratch("conv.winograd_v", (16, C, tiles), dy.dtype)
                _winograd_input(x, ph, pw, TH, TW, r0, r1, V)
                dU += np.matmul(dM, V.transpose(0, 2, 1), out=scratch("conv.winograd_dup", (16, F, C), dy.dtype))
            if dx is not None:  # dV_ξ = U_ξᵀ @ dM_ξ, then dd = B dV Bᵀ into the image's plane buffer
                dV = scratch("conv.winograd_v", (16, C, tiles), dy.dtype)
                np.matmul(Ut, dM, out=dV)
                _winograd_input_grad(dV, TH, TW, r0, r1, plane)
        if dx is not None:
            dx[n] = plane[:, ph:ph + H, pw:pw + W]

    threads.parallel_for(image, N)
    if dw is not None:  # dg = Gᵀ dU G
        dU = np.sum(list(dU_parts.values()), axis=0)
        dw[...] = matmul(dU.reshape(16, F * C).T, _GG).reshape(F, C, 3, 3)


# Each transform is applied as two 1-D passes, the rows of the tile then its columns (Bᵀ d B = (Bᵀ d) B),
# and the loops run along the tiles, writing each of the 16 transformed values of a tile to its own
# contiguous stream: straight-line loop bodies with unit or stride-2 steps, which LLVM vectorizes (a loop
# over ξ or a function returning tuples inside the loop did not: 4× slower). The tiles of a piece sit in
# slots, TW + 1 per row of tiles: tile (r, tw) in slot (r − r0)·(TW + 1) + tw, and one spare slot at the
# end of each row. With the spare, a tile's right neighbour is always the next slot, so the loops run over
# all the piece's slots at once instead of row by row: a row of the tutorial's second conv has only 24
# tiles, too short for a vector loop (its transforms took 0.67 ns per value, 0.41 on 64-tile rows). The
# spare slots carry junk forward (their outputs are dropped) and zeros backward (dM there is 0), and cost
# 1/(TW + 1) more GEMM. The kernels are serial and release the GIL: the threads of kernels/cpu/threads.py
# run them on their own pieces.

@njit(cache=True, nogil=True)
def _winograd_input(x, ph, pw, TH, TW, r0, r1, V):
    """V[ξ, c, slot] = (Bᵀ d B)[ξ] for the tiles of rows r = n·TH + th in [r0, r1), slot (r − r0)·(TW + 1)
    + tw, d the 4×4 tile at (2·th, 2·tw) of the zero-padded x[n, c] (ξ = 4·row + column of the transformed
    tile); the spare slots get junk.

    Tile tw reads the padded row's columns 2tw .. 2tw + 3, i.e. its even columns tw, tw + 1 and its odd
    columns tw, tw + 1. So row i of every tile row of the piece is copied, zero-padded, into rows[i] (2·(TW + 1)
    columns a tile row: the spare slot's place) and split into its even and odd columns (e[i], o[i]), the
    rows are combined (Bᵀ d) on those, and the columns (· B) then read e[·, t], o[·, t], e[·, t + 1],
    o[·, t + 1]: every loop but the copies runs at unit or stride 2 over all the piece's slots."""
    N, C, H, W = x.shape
    TW1 = TW + 1
    S = (r1 - r0) * TW1  # slots in the piece
    rows = np.zeros((4, 2 * S + 2), x.dtype)  # only the input's pixels are written: the padding stays 0
    e = np.empty((4, S + 1), x.dtype)  # + 1: the last spare slot reads one past the end
    o = np.empty((4, S + 1), x.dtype)
    te = np.empty((4, S + 1), x.dtype)
    to = np.empty((4, S + 1), x.dtype)
    for c in range(C):
        for r in range(r0, r1):
            n, th = r // TH, r % TH
            base = 2 * (r - r0) * TW1 + pw
            for i in range(4):  # the input row 2th + i (a padding row stays 0, for every channel)
                h = 2 * th + i - ph
                if 0 <= h < H:
                    rows[i, base:base + W] = x[n, c, h]
        for i in range(4):  # even and odd columns
            ri, ei, oi = rows[i], e[i], o[i]
            for k in range(S + 1):
                ei[k] = ri[2 * k]
                oi[k] = ri[2 * k + 1]
        e0, e1, e2, e3 = e[0], e[1], e[2], e[3]
        o0, o1, o2, o3 = o[0], o[1], o[2], o[3]
        te0, te1, te2, te3 = te[0], te[1], te[2], te[3]
        to0, to1, to2, to3 = to[0], to[1], to[2], to[3]
        for k in range(S + 1):  # Bᵀ d: combine the rows
            te0[k], te1[k], te2[k], te3[k] = e0[k] - e2[k], e1[k] + e2[k], e2[k] - e1[k], e1[k] - e3[k]
            to0[k], to1[k], to2[k], to3[k] = o0[k] - o2[k], o1[k] + o2[k], o2[k] - o1[k], o1[k] - o3[k]
        for i in range(4):  # (Bᵀ d) B: combine the columns of each row i, slot by slot
            ei, oi = te[i], to[i]
            # 1-D unit-stride views: Numba knows they are contiguous, so LLVM vectorizes the loop
            v0, v1 = V[4 * i, c, :S], V[4 * i + 1, c, :S]
            v2, v3 = V[4 * i + 2, c, :S], V[4 * i + 3, c, :S]
            for t in range(S):
                v0[t] = ei[t] - ei[t + 1]
                v1[t] = oi[t] + ei[t + 1]
                v2[t] = ei[t + 1] - oi[t]
                v3[t] = oi[t] - oi[t + 1]


@njit(cache=True, nogil=True)
def _winograd_output(M, b, act, TH, TW, r0, r1, y):
    """For the tile rows r = n·TH + th in [r0, r1): y[n, f, 2th:2th + 2] = the 2×2 blocks Aᵀ M A of the row's
    tiles (slots (r − r0)·(TW + 1) + tw), plus b[f], through the activation `act` (rows and columns past an
    odd output size, and the spare slots, are dropped)."""
    N, F, OH, OW = y.shape
    TW1 = TW + 1
    S = (r1 - r0) * TW1
    s = np.empty((8, S), y.dtype)  # Aᵀ M: rows 0 and 1 of each tile's 2×4
    out = np.empty((2, 2 * S), y.dtype)  # (Aᵀ M) A: the 2 output rows of each tile row, 2 columns a slot
    for f in range(F):
        for j in range(4):  # Aᵀ M: combine the rows, for each column j of the tiles
            m0, m1, m2, m3 = M[j, f, :S], M[4 + j, f, :S], M[8 + j, f, :S], M[12 + j, f, :S]
            s0, s1 = s[j], s[4 + j]
            for t in range(S):
                s0[t] = m0[t] + m1[t] + m2[t]
                s1[t] = m1[t] - m2[t] - m3[t]
        for i in range(2):  # (Aᵀ M) A: combine the columns of each row i
            row, a0, a1, a2, a3 = out[i], s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]
            for t in range(S):
                row[2 * t] = a0[t] + a1[t] + a2[t]
                row[2 * t + 1] = a1[t] - a2[t] - a3[t]
        bias = b[f]
        for r in range(r0, r1):
            n, th = r // TH, r % TH
            base = 2 * (r - r0) * TW1
            for i in range(min(2, OH - 2 * th)):
                dst, src = y[n, f, 2 * th + i], out[i, base:base + OW]
                if act:
                    for ow in range(OW):
                        dst[ow] = fused_activate(src[ow] + bias, act)
                else:
                    for ow in range(OW):
                        dst[ow] = src[ow] + bias


@njit(cache=True, nogil=True)
def _winograd_output_pooled(M, b, act, TH, TW, r0, r1, y):
    """Like _winograd_output, but y (N, F, OH // 2, OW // 2) gets each whole tile's max, + b[f], then the
    activation (monotone: it commutes with the max): its 2×2 max pooling. A tile past the pooled size (odd
    OH or OW) is dropped, as pooling does."""
    N, F, PH, PW = y.shape
    TW1 = TW + 1
    S = (r1 - r0) * TW1
    s = np.empty((8, S), y.dtype)  # Aᵀ M: rows 0 and 1 of each tile's 2×4
    peak = np.empty(S, y.dtype)  # the max of each tile's 4 outputs
    for f in range(F):
        for j in range(4):  # Aᵀ M: combine the rows, for each column j of the tiles
            m0, m1, m2, m3 = M[j, f, :S], M[4 + j, f, :S], M[8 + j, f, :S], M[12 + j, f, :S]
            s0, s1 = s[j], s[4 + j]
            for t in range(S):
                s0[t] = m0[t] + m1[t] + m2[t]
                s1[t] = m1[t] - m2[t] - m3[t]
        a0, a1, a2, a3, a4, a5, a6, a7 = s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]
        for t in range(S):  # (Aᵀ M) A: the tile's 4 outputs, and their max
            peak[t] = max(max(a0[t] + a1[t] + a2[t], a1[t] - a2[t] - a3[t]),
                          max(a4[t] + a5[t] + a6[t], a5[t] - a6[t] - a7[t]))
        bias = b[f]
        for r in range(r0, r1):
            n, th = r // TH, r % TH
            if th < PH:
                dst, src = y[n, f, th], peak[(r - r0) * TW1:]
                for tw in range(PW):
                    dst[tw] = fused_activate(src[tw] + bias, act)


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _winograd_output_grad(dy, y, masked, TH, TW, r0, r1, dM, sums):
    """For the tile rows r = n·TH + th in [r0, r1): dM[ξ, f, slot] = (A dz Aᵀ)[ξ] (slot (r − r0)·(TW + 1) +
    tw), dz the 2×2 block of dz = dy · [y > 0] (or dy when not masked) at (2·th, 2·tw), 0 past the plane's
    edge and in the spare slots; and sums[n, f] += Σ of those rows of dz (float64)."""
    N, F, OH, OW = dy.shape
    TW1 = TW + 1
    S = (r1 - r0) * TW1
    dz = np.zeros((2, 2 * S), dy.dtype)  # 2 columns a slot; what no output reaches stays 0
    t = np.empty((4, 2 * S), dy.dtype)  # A dz: the 4 rows
    for f in range(F):
        for r in range(r0, r1):
            n, th = r // TH, r % TH
            base = 2 * (r - r0) * TW1
            total = 0.0
            for i in range(2):
                oh = 2 * th + i
                if oh < OH:
                    total += _relu_grad_row(dz[i, base:base + OW], dy[n, f, oh], y[n, f, oh], masked, 1)
            sums[n, f] += total
        z0, z1 = dz[0], dz[1]
        t0, t1, t2, t3 = t[0], t[1], t[2], t[3]
        for j in range(2 * S):  # A dz: combine the 2 rows
            t0[j], t1[j], t2[j], t3[j] = z0[j], z0[j] + z1[j], z0[j] - z1[j], -z1[j]
        for i in range(4):  # (A dz) Aᵀ: combine the 2 columns of each row i (1-D views: vectorized)
            ti = t[i]
            v0, v1, v2, v3 = dM[4 * i, f, :S], dM[4 * i + 1, f, :S], dM[4 * i + 2, f, :S], dM[4 * i + 3, f, :S]
            for k in range(S):
                a0, a1 = ti[2 * k], ti[2 * k + 1]
                v0[k] = a0
                v1[k] = a0 + a1
                v2[k] = a0 - a1
                v3[k] = -a1


@njit(cache=True, nogil=True)
def _winograd_input_grad(dV, TH, TW, r0, r1, plane):
    """For the tile rows r = n·TH + th in [r0, r1) (one image): add B dV Bᵀ of each tile into plane[c]
    (C, 2TH + 2, 2TW + 2), the gradient of the image's padded planes, at the tile's place (tiles overlap by
    2 rows and 2 columns). The transforms run over all the piece's slots; each tile's 4 columns go to two
    interleaved streams (its columns 0, 1 and 2, 3), added into each row of the plane by two unit-stride
    loops (tile tw's columns 2 and 3 are tile tw + 1's 0 and 1)."""
    C = plane.shape[0]
    TW1 = TW + 1
    S = (r1 - r0) * TW1
    q = np.empty((16, S), dV.dtype)  # B dV
    left = np.empty((4, 2 * S), dV.dtype)  # (B dV) Bᵀ: row i's columns 0, 1 of each slot ...
    right = np.empty((4, 2 * S), dV.dtype)  # ... and its columns 2, 3
    for c in range(C):
        for j in range(4):  # B dV: combine the rows, for each column j of the tiles (1-D views: vectorized)
            d0, d1, d2, d3 = dV[j, c, :S], dV[4 + j, c, :S], dV[8 + j, c, :S], dV[12 + j, c, :S]
            q0, q1, q2, q3 = q[j], q[4 + j], q[8 + j], q[12 + j]
            for t in range(S):
                q0[t] = d0[t]
                q1[t] = d1[t] - d2[t] + d3[t]
                q2[t] = d1[t] + d2[t] - d0[t]
                q3[t] = -d3[t]
        for i in range(4):  # (B dV) Bᵀ: combine the columns of row i
            a0, a1, a2, a3 = q[4 * i], q[4 * i + 1], q[4 * i + 2], q[4 * i + 3]
            li, ri = left[i], right[i]
            for t in range(S):
                li[2 * t] = a0[t]
                li[2 * t + 1] = a1[t] - a2[t] + a3[t]
                ri[2 * t] = a1[t] + a2[t] - a0[t]
                ri[2 * t + 1] = -a3[t]
        for r in range(r0, r1):  # added into the plane, row by row of tiles (the spare slots are left out)
            th = r % TH
            base = 2 * (r - r0) * TW1
            for i in range(4):
                row = plane[c, 2 * th + i]
                dst, src = row[:2 * TW], left[i, base:base + 2 * TW]
                for k in range(2 * TW):
                    dst[k] += src[k]
                dst, src = row[2:2 * TW + 2], right[i, base:base + 2 * TW]
                for k in range(2 * TW):
                    dst[k] += src[k]


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

@njit(cache=True)
def _padded_plane(x_plane, ph, pw, Wp, buf):
    """The (H, W) plane with ph rows and pw columns of zeros before it, in rows of Wp, flattened: the plane
    itself when buf is empty (no padding), else copied into buf (whose border the caller zeroed once)."""
    H, W = x_plane.shape
    if buf.size == 0:
        return x_plane.reshape(H * W)
    for h in range(H):
        buf[(h + ph) * Wp + pw:(h + ph) * Wp + pw + W] = x_plane[h]
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
    loop over the kernel offsets loads and stores the whole plane nine times (2.5× slower here)."""
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
    total[0, 0] += a00
    total[0, 1] += a01
    total[0, 2] += a02
    total[1, 0] += a10
    total[1, 1] += a11
    total[1, 2] += a12
    total[2, 0] += a20
    total[2, 1] += a21
    total[2, 2] += a22


@njit(cache=True, parallel=True)
def _direct_forward(x, w, b, act, stride, padding, dilation, y, pooled=False):
    """x (N, C, H, W), w (F, 1, KH, KW), F = m·C -> y (N, F, OH, OW): filter f reads only channel f // m,

      y[n, f, oh, ow] = b[f] + Σ_{i, j} w[f, 0, i, j] · x[n, f // m, oh·sh + i·dil_h − ph, ow·sw + j·dil_w − pw]

    through the activation `act` (a FUSED_CODES code). Parallel over the output planes (n, f). Each plane is
    built on the wide grid in a buffer of this thread (the bias, then one multiply-add per kernel offset),
    then its pixels are written to y once, through the activation. With pooled, y (N, F, OH // 2, OW // 2)
    gets the 2×2 max pooling of that output instead, taken from the same buffer."""
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    OH, OW = (y.shape[2], y.shape[3]) if not pooled else (2 * y.shape[2], 2 * y.shape[3])
    (sh, sw), (ph, pw), (dil_h, dil_w) = stride, padding, dilation
    Hp, Wp = _padded_extent(H, ph, OH, KH, sh, dil_h), _padded_extent(W, pw, OW, KW, sw, dil_w)
    L = (Hp - (KH - 1) * dil_h) * Wp - (KW - 1) * dil_w
    m = F // C
    per = _planes_per_task(N * F)
    for task in prange(-(-N * F // per)):
        buf = np.zeros(Hp * Wp if Hp * Wp != H * W else 0, x.dtype)  # its border stays 0: the inside is copied
        wide = np.empty(L, y.dtype)
        for plane in range(task * per, min(N * F, (task + 1) * per)):
            _direct_forward_plane(x, w, b, act, plane, stride, padding, dilation, y, pooled, buf, wide, Wp, OH, m)


@njit(cache=True)
def _direct_forward_plane(x, w, b, act, plane, stride, padding, dilation, y, pooled, buf, wide, Wp, OH, m):
    """One output plane of _direct_forward, in this thread's buffers."""
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


@njit(cache=True)
def _planes_per_task(planes):
    """Planes per parallel task of the direct kernels: about 64 tasks, so each thread allocates its plane
    buffers a few times per call instead of once per plane (6,144 small planes in the regressor's last
    depthwise conv), and a thread slowed by other load still finds tasks left to balance."""
    return max(1, planes // 64)


@njit(cache=True)
def _copy_out_row(out, wide, step, act):
    """out[k] = act(wide[k·step]) (act: a FUSED_CODES code; NaN passes through)."""
    if step != 1:  # the strided copy first, then the activation in a unit-stride loop, which vectorizes
        for k in range(out.size):  # (both in one strided loop: 4 ms more for ReLU6 on the regressor's
            out[k] = wide[k * step]  # 96-channel stride-2 conv, whose copy takes 1)
        if act:
            for k in range(out.size):
                out[k] = fused_activate(out[k], act)
    elif act:
        for k in range(out.size):
            out[k] = fused_activate(wide[k], act)
    else:
        for k in range(out.size):
            out[k] = wide[k]


@njit(cache=True, parallel=True)
def _direct_input_grad(dy, w, stride, padding, dilation, dx):
    """dx[n, c, ih, iw] = Σ w[f, 0, i, j] · dy[n, f, oh, ow] over the m filters f that read channel c and
    the (i, j, oh, ow) that met (ih, iw) (dx is overwritten). Parallel over the input planes (n, c): each
    thread owns its plane. On the wide grids: dy's plane is spread onto the stride-1 grid, each kernel offset
    adds w·(that grid) into the padded input plane, whose interior is then dx's plane."""
    N, C, H, W = dx.shape
    F, _, KH, KW = w.shape
    (sh, sw), (ph, pw), (dil_h, dil_w) = stride, padding, dilation
    Hp = _padded_extent(H, ph, dy.shape[2], KH, sh, dil_h)
    Wp = _padded_extent(W, pw, dy.shape[3], KW, sw, dil_w)
    L = (Hp - (KH - 1) * dil_h) * Wp - (KW - 1) * dil_w
    m = F // C
    per = _planes_per_task(N * C)
    for task in prange(-(-N * C // per)):
        # wide dz, with a margin of zeros in front (see the plane's 3×3 case); the pixels no output samples stay 0
        margin = (KH - 1) * dil_h * Wp + (KW - 1) * dil_w
        dzw = np.zeros(Hp * Wp + 2 * margin, dx.dtype)
        dxp = np.empty(Hp * Wp, dx.dtype)  # the padded input plane's gradient
        for plane in range(task * per, min(N * C, (task + 1) * per)):
            _direct_input_grad_plane(dy, w, plane, stride, padding, dilation, dx, dzw, dxp, Wp, L, m, margin)


@njit(cache=True)
def _direct_input_grad_plane(dy, w, plane, stride, padding, dilation, dx, dzw, dxp, Wp, L, m, margin):
    """One input plane of _direct_input_grad, in this thread's buffers; dz's wide grid sits at
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
        dx[n, c, h] = dxp[(h + ph) * Wp + pw:(h + ph) * Wp + pw + W]


@njit(cache=True, parallel=True)
def _direct_weight_grad(dy, y, masked, x, stride, padding, dilation, dw, bias_sums, zero):
    """With dz = dy · [y > 0] when masked (a fused ReLU), else dz = dy:

      dw[f, 0, i, j] = Σ_{n, oh, ow} dz[n, f, oh, ow] · x[n, f // m, oh·sh + i·dil_h − ph, ow·sw + j·dil_w − pw]
        bias_sums[f] = Σ_{n, oh, ow} dz[n, f, oh, ow]

    Parallel over the filters f: each thread sums its own dw[f] over the whole batch (never racy). dy (and y)
    are read once: each plane of dz is spread onto the wide grid, then each kernel offset is one long dot
    product with the (padded) input plane. The dots run in the data's dtype (`zero`), their sums in float64."""
    N, C, H, W = x.shape
    F, _, KH, KW = dw.shape
    (sh, sw), (ph, pw), (dil_h, dil_w) = stride, padding, dilation
    Hp = _padded_extent(H, ph, dy.shape[2], KH, sh, dil_h)
    Wp = _padded_extent(W, pw, dy.shape[3], KW, sw, dil_w)
    L = (Hp - (KH - 1) * dil_h) * Wp - (KW - 1) * dil_w
    m = F // C
    for f in prange(F):
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


# ---------------------------------------------------------------------- channels-last (NHWC)
#
# The same convolution with the channels last: x (N, H, W, C) -> y (N, OH, OW, F), w in its usual
# (F, C/G, KH, KW) layout, padding as above:
#
#     y[n, oh, ow, f] = b[f] + Σ_{c, i, j} w[f, c, i, j] · x[n, oh·s + i·d − top, ow·s + j·d − left, c]
#
# Why a second layout: MobileNet's blocks are 1×1 convs and depthwise 3×3 convs on few channels, and both
# run faster with the channels last (measured on the MobileNetV2 regressor's layers, batch 16, 2 threads):
# - a 1×1 conv is ONE GEMM over all N·H·W pixels, y (M, F) = x (M, C) @ Wᵀ (C, F): OpenBLAS runs that
#   1.1–2× faster than NCHW's per-image W (F, C) @ x[n] (C, H·W) for C = 16–144 (16 → 96 at 64×64:
#   1.6 vs 3.2 ms forward);
# - a depthwise conv reads all the channels of a pixel at once: its inner loop is C contiguous values (SIMD)
#   whatever the stride, where NCHW's steps along a row by the stride (96 channels at 64×64, stride 2: forward
#   1.5 vs 3.2 ms, backward 3.6 vs 7.2 ms; 384 channels at 8×8: 0.15 vs 1.7 ms, a plane of 64 values being
#   too short a loop).
# Other convs (the stem's 3×3 on 3 channels) are im2col + GEMM, the columns of a pixel being KH·KW runs of C
# contiguous values. Supported here: groups = 1, and depthwise (groups = C = F); the op layer (ops/conv.py)
# runs any other conv through the NCHW kernels between two transposes.

CHANNELS_LAST = True


def conv2d_channels_last_forward(x, w, b, stride, padding, dilation, groups, activation=None):
    """x (N, H, W, C), w (F, C/G, KH, KW), b (F,) or None -> y = act(conv2d + b) (N, OH, OW, F), for groups = 1
    or a depthwise conv (groups = C = F); activation None, "relu" or "relu6"."""
    x, w = np.ascontiguousarray(x), np.ascontiguousarray(w)
    (top, left), y_shape, depthwise = _channels_last_geometry(x.shape, w.shape, stride, padding, dilation, groups)
    act = FUSED_CODES[activation]
    y = output(y_shape, x.dtype)
    F = w.shape[0]
    bias = _bias_or_zeros(b, F, x.dtype)
    if depthwise:
        taps = _taps_last(w)[:, :, 0]  # (KH, KW, C)
        if stride[1] == 1:
            OW = y_shape[2]
            _depthwise_rows_forward(_image_rows(x), _tiled_taps(taps, OW), np.tile(bias, OW), F, x.shape[1], y_shape[1],
                                    stride[0], (top, left), dilation, _image_rows(y), act)
        else:
            _depthwise_last_forward(x, taps, bias, stride, (top, left), dilation, y, act)
        return y
    y2 = y.reshape(-1, F)
    if _is_pointwise(x.shape, w.shape, stride, y_shape):  # x is its own im2col matrix
        matmul(x.reshape(-1, x.shape[3]), w.reshape(F, -1).T, out=y2)
    else:
        weights = _taps_last(w).reshape(-1, F)  # (KH·KW·C, F), rows in the (i, j, c) order of the columns
        for n0, n1, cols in _columns_last(x, w.shape, stride, (top, left), dilation, y_shape):
            rows = slice(n0 * y_shape[1] * y_shape[2], n1 * y_shape[1] * y_shape[2])
            matmul(cols, weights, out=y2[rows])
    if b is not None or act != NO_ACTIVATION:
        _bias_act_last(y2, bias, act)
    return y


def conv2d_channels_last_backward(dy, x, w, stride, padding, dilation, groups, need_dx, need_dw, need_db):
    """dy (N, OH, OW, F) -> (dx like x, dw like w, db (F,)), None for what is not needed."""
    dy, x, w = np.ascontiguousarray(dy), np.ascontiguousarray(x), np.ascontiguousarray(w)
    (top, left), y_shape, depthwise = _channels_last_geometry(x.shape, w.shape, stride, padding, dilation, groups)
    F = w.shape[0]
    dx = dw = db = None
    if depthwise:
        taps = _taps_last(w)[:, :, 0]  # (KH, KW, C)
        unit_stride, OW = stride[1] == 1, y_shape[2]
        if need_dx:
            dx = output(x.shape, x.dtype)
            if unit_stride:
                _depthwise_rows_input_grad(_image_rows(dy), _tiled_taps(taps, OW), F, x.shape[1], y_shape[1], stride[0],
                                           (top, left), dilation, _image_rows(dx))
            else:
                _depthwise_last_input_grad(dy, taps, stride, (top, left), dilation, dx)
        if need_dw or need_db:
            KH, KW = taps.shape[:2]
            if unit_stride:  # sums per (tap, ow, c), added up over ow here
                sums = np.zeros((numba.get_num_threads(), KH * KW + 1, OW * F), np.float64)
                _depthwise_rows_weight_grad(_image_rows(dy), _image_rows(x), F, x.shape[1], y_shape[1], stride[0],
                                            (top, left), dilation, KW, sums)
                sums = sums.sum(axis=0).reshape(KH * KW + 1, OW, F).sum(axis=1)
            else:
                sums = np.zeros((numba.get_num_threads(), KH * KW + 1, F), np.float64)
                _depthwise_last_weight_grad(dy, x, KH, KW, stride, (top, left), dilation, sums)
                sums = sums.sum(axis=0)
            dw = np.ascontiguousarray(sums[:-1].T.reshape(w.shape), x.dtype) if need_dw else None
            db = sums[-1].astype(x.dtype) if need_db else None
        return dx, dw, db
    dy2 = dy.reshape(-1, F)
    if _is_pointwise(x.shape, w.shape, stride, y_shape):
        x2 = x.reshape(-1, x.shape[3])
        if need_dx and need_dw:
            dx2, dw2 = _pointwise_backward(dy2, x2, w.reshape(F, -1))
            dx, dw = dx2.reshape(x.shape), dw2.reshape(w.shape)
        else:
            dx = matmul(dy2, w.reshape(F, -1), out=output(x2.shape, x.dtype)).reshape(x.shape) if need_dx else None
            dw = matmul(dy2.T, x2).reshape(w.shape) if need_dw else None
    else:
        weights = _taps_last(w).reshape(-1, F)
        dweights = np.zeros(weights.T.shape, np.float64) if need_dw else None
        if need_dx:
            dx = output(x.shape, x.dtype)
        for n0, n1, cols in _columns_last(x, w.shape, stride, (top, left), dilation, y_shape, fill=need_dw):
            rows = dy2[n0 * y_shape[1] * y_shape[2]:n1 * y_shape[1] * y_shape[2]]
            if need_dw:
                dweights += matmul(rows.T, cols)
            if need_dx:  # the columns' gradient, added back into the images (col2im)
                dcols = matmul(rows, weights.T, out=cols)
                _col2im_last(dcols.reshape(n1 - n0, y_shape[1], y_shape[2], -1), w.shape[2], w.shape[3],
                             stride, (top, left), dilation, dx[n0:n1])
        if need_dw:  # (F, KH·KW·C) in (i, j, c) order -> (F, C, KH, KW)
            KH, KW = w.shape[2], w.shape[3]
            dw = np.ascontiguousarray(dweights.reshape(F, KH, KW, -1).transpose(0, 3, 1, 2), x.dtype)
    db = _column_sums(dy2) if need_db else None
    return dx, dw, db


POINTWISE_CHUNK_BYTES = 192 * 1024  # rows of dy per GEMM pair: this many bytes, so they stay in L2 between the two


def _pointwise_backward(dy2, x2, w2):
    """dx = dy W and dW = dyᵀ x of a 1×1 conv (dy (M, F), x (M, C), W (F, C)) in one pass over dy: each thread
    takes chunks of rows and runs both GEMMs on a chunk while it is in its L2 cache, summing its own share of
    dW (added up after). As two whole GEMMs, each read dy from memory: for the regressor's 16 → 96 conv at
    64×64 (dy 25 MB), 4.6 -> 3.0 ms; 10-20 % on its smaller 1×1 convs."""
    M, F = dy2.shape
    rows = max(16, POINTWISE_CHUNK_BYTES // (F * dy2.dtype.itemsize) // 16 * 16)
    chunks = [slice(lo, min(M, lo + rows)) for lo in range(0, M, rows)]
    parts = max(1, min(threads.num_threads(), len(chunks)))
    dx2 = output(x2.shape, x2.dtype)
    dw_parts = np.zeros((parts,) + w2.shape, np.float64)

    def work(t):
        product = np.empty(w2.shape, dy2.dtype)
        for chunk in chunks[t::parts]:
            np.matmul(dy2[chunk], w2, out=dx2[chunk])
            np.matmul(dy2[chunk].T, x2[chunk], out=product)
            dw_parts[t] += product
    threads.parallel_for(work, parts)
    return dx2, dw_parts.sum(axis=0).astype(dy2.dtype)


def _column_sums(a2):
    """Σ over the rows of a2 (M, F) -> (F,) in a2's dtype: the bias gradient Σ_{n, oh, ow} dy (NumPy's
    float64 sum over the rows took 4.9 ms for the regressor's 65,536 × 96 dy)."""
    sums = np.zeros((numba.get_num_threads(), a2.shape[1]), np.float64)
    _row_block_sums(a2, sums)
    return sums.sum(axis=0).astype(a2.dtype)


@njit(cache=True, parallel=True, fastmath={"reassoc", "contract"})
def _row_block_sums(a2, sums):
    """sums[t] += Σ of thread t's share of the rows of a2, in the data's dtype for 64 rows at a time (SIMD
    over the columns), then into the float64 totals."""
    T, F = sums.shape
    M = a2.shape[0]
    for t in prange(T):
        part = np.zeros(F, a2.dtype)
        first, last = t * M // T, (t + 1) * M // T
        for m in range(first, last):
            row = a2[m]
            for f in range(F):
                part[f] += row[f]
            if (m - first) % 64 == 63 or m == last - 1:
                for f in range(F):
                    sums[t, f] += part[f]
                part[:] = 0


def _channels_last_geometry(x_shape, w_shape, stride, padding, dilation, groups):
    """-> (top, left), the output's shape (N, OH, OW, F), and whether the conv is depthwise."""
    N, H, W, C = x_shape
    F, Cg, KH, KW = w_shape
    top_left, (_, _, OH, OW) = _geometry((N, C, H, W), w_shape, stride, padding, dilation)
    depthwise = groups == C and F == C and Cg == 1
    if groups != 1 and not depthwise:
        raise ValueError(f"channels-last conv: groups={groups} with weight {w_shape} is neither 1 nor depthwise")
    return top_left, (N, OH, OW, F), depthwise


def _is_pointwise(x_shape, w_shape, stride, y_shape):
    """A 1×1 conv at stride 1 without padding: y (M, F) = x (M, C) @ Wᵀ, x being its own im2col matrix."""
    return w_shape[2:] == (1, 1) and stride == (1, 1) and x_shape[1:3] == y_shape[1:3]


def _taps_last(w):
    """(F, C/G, KH, KW) -> (KH, KW, C/G, F), contiguous: the filters' taps with the filters last."""
    return np.ascontiguousarray(w.transpose(2, 3, 1, 0))


def _columns_last(x, w_shape, stride, top_left, dilation, y_shape, fill=True):
    """Yield (n0, n1, cols) for chunks of images: cols (n·OH·OW, KH·KW·C) their im2col matrix, one row per
    output pixel (filled only when `fill`), in a workspace buffer reused by every chunk."""
    N, H, W, C = x.shape
    _, OH, OW, _ = y_shape
    KH, KW = w_shape[2], w_shape[3]
    image_bytes = OH * OW * KH * KW * C * x.dtype.itemsize  # one image's columns
    per_chunk = max(1, min(N, COLS_BUDGET_BYTES // max(image_bytes, 1)))
    for n0 in range(0, N, per_chunk):
        n1 = min(N, n0 + per_chunk)
        cols = scratch("cols_last", ((n1 - n0) * OH * OW, KH * KW * C), x.dtype)
        if fill:
            _im2col_last(x[n0:n1], KH, KW, stride, top_left, dilation, OH, OW, cols)
        yield n0, n1, cols


@njit(cache=True, parallel=True)
def _im2col_last(x, KH, KW, stride, padding, dilation, OH, OW, cols):
    """cols[(n, oh, ow), (i, j, c)] = x[n, oh·sh + i·dil_h − top, ow·sw + j·dil_w − left, c], 0 outside the image.
    Parallel over the output rows (n, oh): each writes its own rows of cols."""
    N, H, W, C = x.shape
    (sh, sw), (top, left), (dil_h, dil_w) = stride, padding, dilation
    for r in prange(N * OH):
        n, oh = r // OH, r % OH
        for ow in range(OW):
            row = cols[r * OW + ow]
            for i in range(KH):
                ih = oh * sh + i * dil_h - top
                for j in range(KW):
                    iw = ow * sw + j * dil_w - left
                    k = (i * KW + j) * C
                    inside = 0 <= ih < H and 0 <= iw < W
                    for c in range(C):  # (a slice assignment per pixel costs more than its 3 values on RGB)
                        row[k + c] = x[n, ih, iw, c] if inside else 0


@njit(cache=True)
def _output_row(ih, i, top, dil_h, sh, OH):
    """The output row oh whose kernel row i reads input row ih (oh·sh + i·dil_h − top = ih), or −1: the rows
    a backward kernel gathers from when it writes input row ih."""
    t = ih + top - i * dil_h
    if t < 0 or t % sh != 0 or t // sh >= OH:
        return -1
    return t // sh


@njit(cache=True, parallel=True)
def _col2im_last(dcols, KH, KW, stride, padding, dilation, dx):
    """dx[n, ih, iw, c] = Σ dcols[n, oh, ow, (i, j, c)] over the (oh, ow, i, j) that read (ih, iw).
    Parallel over the input rows (n, ih): a row gathers from the output rows oh with oh·sh + i·dil_h − top = ih,
    so each thread writes only its own rows of dx."""
    N, H, W, C = dx.shape
    _, OH, OW, _ = dcols.shape
    (sh, sw), (top, left), (dil_h, dil_w) = stride, padding, dilation
    for r in prange(N * H):
        n, ih = r // H, r % H
        row = dx[n, ih]
        row[:] = 0
        for i in range(KH):
            oh = _output_row(ih, i, top, dil_h, sh, OH)
            if oh < 0:
                continue
            for j in range(KW):
                lo, hi = _valid_range(j * dil_w - left, sw, W, OW)
                k = (i * KW + j) * C
                for ow in range(lo, hi):
                    iw = ow * sw + j * dil_w - left
                    row[iw] += dcols[n, oh, ow, k:k + C]


@njit(cache=True, parallel=True)
def _bias_act_last(y2, b, act):
    """y2 (M, F) = act(y2 + b), per row."""
    M, F = y2.shape
    for m in prange(M):
        row = y2[m]
        for f in range(F):
            row[f] = fused_activate(row[f] + b[f], act)


@njit(cache=True, parallel=True, fastmath={"contract"})
def _depthwise_last_forward(x, taps, b, stride, padding, dilation, y, act):
    """y[n, oh, ow, c] = act(b[c] + Σ_{i,j} taps[i, j, c] · x[n, oh·sh + i·dil_h − top, ow·sw + j·dil_w − left, c]).
    Parallel over the output rows (n, oh); the row (OW·C values) is built in place, tap by tap, each tap a
    multiply-add of C contiguous values per pixel."""
    N, H, W, C = x.shape
    _, OH, OW, _ = y.shape
    KH, KW, _ = taps.shape
    (sh, sw), (top, left), (dil_h, dil_w) = stride, padding, dilation
    for r in prange(N * OH):
        n, oh = r // OH, r % OH
        out = y[n, oh]
        for ow in range(OW):
            out[ow] = b
        for i in range(KH):
            ih = oh * sh + i * dil_h - top
            if ih < 0 or ih >= H:
                continue
            for j in range(KW):
                tap = taps[i, j]
                lo, hi = _valid_range(j * dil_w - left, sw, W, OW)
                for ow in range(lo, hi):
                    pixel, acc = x[n, ih, ow * sw + j * dil_w - left], out[ow]
                    for c in range(C):
                        acc[c] += pixel[c] * tap[c]
        if act != NO_ACTIVATION:
            for ow in range(OW):
                acc = out[ow]
                for c in range(C):
                    acc[c] = fused_activate(acc[c], act)


@njit(cache=True, parallel=True, fastmath={"contract"})
def _depthwise_last_input_grad(dy, taps, stride, padding, dilation, dx):
    """dx[n, ih, iw, c] = Σ taps[i, j, c] · dy[n, oh, ow, c] over the (oh, ow, i, j) with oh·sh + i·dil_h − top = ih
    and ow·sw + j·dil_w − left = iw. Parallel over the input rows (n, ih), each gathering from its output rows."""
    N, H, W, C = dx.shape
    _, OH, OW, _ = dy.shape
    KH, KW, _ = taps.shape
    (sh, sw), (top, left), (dil_h, dil_w) = stride, padding, dilation
    for r in prange(N * H):
        n, ih = r // H, r % H
        row = dx[n, ih]
        row[:] = 0
        for i in range(KH):
            oh = _output_row(ih, i, top, dil_h, sh, OH)
            if oh < 0:
                continue
            for j in range(KW):
                tap = taps[i, j]
                lo, hi = _valid_range(j * dil_w - left, sw, W, OW)
                for ow in range(lo, hi):
                    grad, acc = dy[n, oh, ow], row[ow * sw + j * dil_w - left]
                    for c in range(C):
                        acc[c] += grad[c] * tap[c]


@njit(cache=True, parallel=True, fastmath={"reassoc", "contract"})
def _depthwise_last_weight_grad(dy, x, KH, KW, stride, padding, dilation, sums):
    """sums[t, i·KW + j, c] = Σ dy[n, oh, ow, c] · x[n, oh·sh + i·dil_h − top, ow·sw + j·dil_w − left, c] and
    sums[t, KH·KW, c] = Σ dy[n, oh, ow, c] (the bias gradient), over thread t's share of the output rows.
    Each output row is summed in the data's dtype (SIMD over c), then added to the float64 totals; the
    caller adds the threads' totals: no two threads write the same value."""
    N, H, W, C = x.shape
    _, OH, OW, _ = dy.shape
    T, taps_and_bias, _ = sums.shape
    (sh, sw), (top, left), (dil_h, dil_w) = stride, padding, dilation
    rows = N * OH
    for t in prange(T):
        row_sums = np.zeros((taps_and_bias, C), dy.dtype)
        for r in range(t * rows // T, (t + 1) * rows // T):
            n, oh = r // OH, r % OH
            row_sums[:] = 0
            bias = row_sums[KH * KW]
            for ow in range(OW):
                grad = dy[n, oh, ow]
                for c in range(C):
                    bias[c] += grad[c]
            for i in range(KH):
                ih = oh * sh + i * dil_h - top
                if ih < 0 or ih >= H:
                    continue
                for j in range(KW):
                    acc = row_sums[i * KW + j]
                    lo, hi = _valid_range(j * dil_w - left, sw, W, OW)
                    for ow in range(lo, hi):
                        grad, pixel = dy[n, oh, ow], x[n, ih, ow * sw + j * dil_w - left]
                        for c in range(C):
                            acc[c] += grad[c] * pixel[c]
            for k in range(taps_and_bias):
                for c in range(C):
                    sums[t, k, c] += row_sums[k, c]


# Unit stride along the rows (the depthwise convs at stride 1): a row of the output, (OW, C), is one run of
# OW·C values, and the input pixels that a tap (i, j) reads for it are one run too, shifted by j·dil_w − left
# pixels. With each tap repeated OW times (`_tiled_taps`: tap_rows[i, j, ow·C + c] = taps[i, j, c]), a tap is
# one multiply-add over a whole row, out[k] += tap_row[k] · x_row[k + shift·C]: a SIMD loop of OW·C values
# instead of OW loops of C (2 vectors for 32 channels, where the loop overhead was half the time: 32 channels
# at 64×64, backward 4.8 -> ~2 ms).

def _image_rows(a):
    """(N, H, W, C) -> (N·H, W·C), a view: one image row per row."""
    N, H, W, C = a.shape
    return a.reshape(N * H, W * C)


def _tiled_taps(taps, OW):
    """(KH, KW, C) -> (KH, KW, OW·C), each tap repeated OW times."""
    return np.ascontiguousarray(np.tile(taps, (1, 1, OW)))


@njit(cache=True, parallel=True, fastmath={"contract"})
def _depthwise_rows_forward(x_rows, tap_rows, bias_row, C, H, OH, sh, padding, dilation, y_rows, act):
    """y[n, oh] = act(bias + Σ_{i,j} tap_row[i, j] · (x[n, oh·sh + i·dil_h − top] shifted by j·dil_w − left pixels)),
    x_rows (N·H, W·C), y_rows (N·OH, OW·C), tap_rows (KH, KW, OW·C); parallel over the output rows (n, oh)."""
    KH, KW, _ = tap_rows.shape
    W, OW = x_rows.shape[1] // C, y_rows.shape[1] // C
    top, left = padding
    dil_h, dil_w = dilation
    for r in prange(y_rows.shape[0]):
        n, oh = r // OH, r % OH
        out = y_rows[r]
        out[:] = bias_row
        for i in range(KH):
            ih = oh * sh + i * dil_h - top
            if ih < 0 or ih >= H:
                continue
            src = x_rows[n * H + ih]
            for j in range(KW):
                shift = j * dil_w - left
                lo, hi = _valid_range(shift, 1, W, OW)
                acc, pixels, tap = out[lo * C:hi * C], src[(lo + shift) * C:(hi + shift) * C], tap_rows[i, j]
                for k in range(acc.size):
                    acc[k] += pixels[k] * tap[k]
        if act != NO_ACTIVATION:
            for k in range(out.size):
                out[k] = fused_activate(out[k], act)


@njit(cache=True, parallel=True, fastmath={"contract"})
def _depthwise_rows_input_grad(dy_rows, tap_rows, C, H, OH, sh, padding, dilation, dx_rows):
    """dx[n, ih] = Σ tap_row[i, j] · (dy[n, oh] shifted by j·dil_w − left pixels) over the taps (i, j) and the
    output rows oh with oh·sh + i·dil_h − top = ih; dy_rows (N·OH, OW·C), dx_rows (N·H, W·C). Parallel over the
    input rows (n, ih): each gathers into its own row."""
    KH, KW, _ = tap_rows.shape
    W, OW = dx_rows.shape[1] // C, dy_rows.shape[1] // C
    top, left = padding
    dil_h, dil_w = dilation
    for r in prange(dx_rows.shape[0]):
        n, ih = r // H, r % H
        row = dx_rows[r]
        row[:] = 0
        for i in range(KH):
            oh = _output_row(ih, i, top, dil_h, sh, OH)
            if oh < 0:
                continue
            grad = dy_rows[n * OH + oh]
            for j in range(KW):
                shift = j * dil_w - left
                lo, hi = _valid_range(shift, 1, W, OW)
                acc, g, tap = row[(lo + shift) * C:(hi + shift) * C], grad[lo * C:hi * C], tap_rows[i, j]
                for k in range(acc.size):
                    acc[k] += g[k] * tap[k]


@njit(cache=True, parallel=True, fastmath={"reassoc", "contract"})
def _depthwise_rows_weight_grad(dy_rows, x_rows, C, H, OH, sh, padding, dilation, KW, sums):
    """sums[t, i·KW + j, ow·C + c] = Σ dy[n, oh, ow, c] · x[n, oh·sh + i·dil_h − top, ow + j·dil_w − left, c], and
    sums[t, KH·KW] = Σ dy (the bias gradient), over thread t's share of the output rows (n, oh): one SIMD
    multiply-add over a whole row per tap. The sums run in the data's dtype for 16 rows at a time, then go
    into the float64 totals; the caller adds them over t and ow."""
    T, taps_and_bias, OWC = sums.shape
    KH = (taps_and_bias - 1) // KW
    W, OW = x_rows.shape[1] // C, OWC // C
    top, left = padding
    dil_h, dil_w = dilation
    rows = dy_rows.shape[0]
    for t in prange(T):
        part = np.zeros((taps_and_bias, OWC), dy_rows.dtype)
        first, last = t * rows // T, (t + 1) * rows // T
        for r in range(first, last):
            n, oh = r // OH, r % OH
            grad = dy_rows[r]
            bias = part[KH * KW]
            for k in range(OWC):
                bias[k] += grad[k]
            for i in range(KH):
                ih = oh * sh + i * dil_h - top
                if ih < 0 or ih >= H:
                    continue
                src = x_rows[n * H + ih]
                for j in range(KW):
                    shift = j * dil_w - left
                    lo, hi = _valid_range(shift, 1, W, OW)
                    acc, g, pixels = part[i * KW + j, lo * C:hi * C], grad[lo * C:hi * C], src[(lo + shift) * C:(hi + shift) * C]
                    for k in range(acc.size):
                        acc[k] += g[k] * pixels[k]
            if (r - first) % 16 == 15 or r == last - 1:
                for q in range(taps_and_bias):
                    for k in range(OWC):
                        sums[t, q, k] += part[q, k]
                part[:] = 0

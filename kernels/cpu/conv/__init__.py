"""2-D convolution, transposed convolution and constant padding on the CPU (NCHW; and a channels-last conv).

Convolution, x (N, C, H, W), w (F, C/G, KH, KW), G groups, stride s, padding p, dilation d:

    y[n, f, oh, ow] = b[f] + Σ_{c, i, j} w[f, c, i, j] · x[n, g·C/G + c, oh·s + i·d − p, ow·s + j·d − p]

(g = f // (F/G) is the group of filter f; x is 0 outside the image), OH = (H + 2p − d·(KH − 1) − 1) // s + 1.
Its gradients are the same sums read backwards: dx scatters dy through the filters, dw correlates dy with x,
db = Σ_{n, oh, ow} dy.

The functions below are the contract's (kernels/contract.py). Each NCHW one picks an algorithm from
`ALGORITHMS` (algorithms.py), the first that applies to the shapes, in this order:

- **few_channels** (`few_channels.py`): 3×3, stride 1, one or two input channels, no groups (a first layer
  on a grey image). im2col's GEMM would have an inner dimension of C·9 (9 or 18) and a few filters
  as its rows, far below BLAS's peak; the forward builds each output plane in one pass per input channel
  instead (its backward is direct's for one channel, else im2col's).
- **direct** (`direct.py`): one input channel per filter (C/G = 1: depthwise convs, and the grey first
  layers few_channels does not take). im2col would copy the input KH·KW times to feed a GEMM whose inner
  dimension is only KH·KW; the conv is memory bound, so one pass over each big array wins.
- **matmul** (`pointwise.py`): 1×1, stride 1, no padding, no groups. x is already its own im2col matrix: one
  GEMM per image, no copy.
- **winograd** (`winograd.py`): 3×3, stride 1, no dilation or groups, at least 3 input channels (an RGB
  first layer too), a symmetric padding ≤ 2. Where the FLOPs are (the tutorial's 64 → 64 conv is 90 % of its
  arithmetic): F(4×4, 3×3) tiles, 4× fewer multiply-adds than im2col, and no copy of the windows.
- **im2col** (`im2col.py`): everything else, the general case: a copy of the windows into columns, then
  BLAS GEMMs.

The other files: `epilogue.py` (bias, activation, the ReLU mask and the bias sums, applied chunk by chunk
while the output is in cache), `rows.py` (the row loops the kernels share), `geometry.py` (output sizes,
the two forms of padding), `transpose.py` (transposed conv, which reuses the algorithms above, and its
pixel-shuffle case for stride = kernel), `padding.py` (pad2d), `channels_last.py` (the same conv on
(N, H, W, C) arrays, for MobileNet's 1×1 and depthwise convs, which run faster in that layout;
`depthwise3x3.py` its 3×3 depthwise convs, nine taps summed in registers), `separable.py`
(an inverted residual block's [1×1 →] depthwise → 1×1 convs, channels last, band by band in one pass:
inference).

**Fused conv + bias + activation** (`conv2d_bias_relu_forward/backward`, `conv2d_bias_act_forward`): the
bias and the activation are applied to each chunk (GEMM, Winograd) or plane (direct) of the output while it
is in cache, instead of two more passes over the whole output; the backward reads the ReLU's mask from the
output itself (y > 0 exactly where the pre-activation is > 0), so the pre-activation is never stored, and
masks dy as it reads it for the conv's gradients.

**Conv of a concatenation** (`conv2d_concat_forward/backward`, the "concatenated_input" capability): the
conv of the channel concatenation of several inputs (a U-Net decoder's [upsampled, skip]) without building
it where the algorithm reads the parts (Winograd: each part's input transform writes its own channels of the
tiles; its backward gives each part its channels of dx): the copies of a concatenation and of its
gradient's split are not made.

`padding` is (ph, pw), or (top, bottom, left, right) (the "asymmetric_padding" capability): the kernels take
the top and left padding and the output's size, and read every pixel outside the input as 0, so an uneven
padding (Keras' 'same' at stride 2 pads only the bottom and right) needs no pad op and no padded copy of the
whole input.
"""
import contextlib

import numpy as np

from .. import threads, workspace
from ..activation import FUSED_CODES
from ..pool import max_pool2d_forward
from ..workspace import output
from .algorithms import ALGORITHMS, Algorithm, choose, convolve, convolve_backward
from .channels_last import conv2d_channels_last_backward, conv2d_channels_last_forward
from .geometry import _geometry, _top_left, conv_output_size, conv_transpose_output_size
from .padding import pad2d_backward, pad2d_forward
from .separable import separable_forward
from .transpose import conv_transpose2d_backward, conv_transpose2d_forward

@contextlib.contextmanager
def constant_weights(arrays, memo):
    """The block around an inference plan's replay (the "constant_weights" capability): workspace.py's, in
    which `arrays` are constants, with NumPy's BLAS held at one thread for the whole replay (each kernel
    call would otherwise set it and give it back, ~4 µs a call)."""
    with workspace.constant_weights(arrays, memo), threads.one_blas_thread():
        yield


def conv2d_forward(x, w, b, stride, padding, dilation, groups):
    """x (N, C, H, W), w (F, C/G, KH, KW), b (F,) or None -> y (N, F, OH, OW)."""
    return conv2d_bias_act_forward(x, w, b, stride, padding, dilation, groups, None)


def conv2d_backward(dy, x, w, stride, padding, dilation, groups, need_dx, need_dw, need_db):
    """dy (N, F, OH, OW) -> (dx like x, dw like w, db (F,)); None for what is not needed."""
    x, w = np.ascontiguousarray(x), np.ascontiguousarray(w)
    return convolve_backward(np.ascontiguousarray(dy), None, x, x.shape, w, w.shape, stride, _top_left(padding),
                             dilation, groups, need_dx, need_dw, need_db)


def conv2d_concat_forward(xs, w, b, stride, padding, dilation, groups):
    """conv2d of the channel concatenation of xs (a tuple of (N, C_i, H, W) arrays) -> y (N, F, OH, OW), the
    concatenation not built where the algorithm reads the parts (algorithms.py, `reads_parts`)."""
    xs = [np.ascontiguousarray(x) for x in xs]
    return convolve(xs, np.ascontiguousarray(w), b, 0, stride, padding, dilation, groups)


def conv2d_concat_backward(dy, xs, w, stride, padding, dilation, groups, need_dxs, need_dw, need_db):
    """Gradients of conv2d_concat_forward -> (dxs, dw, db): dxs a tuple, each part's gradient (None where
    need_dxs says False), or None when no part needs one."""
    xs, w = [np.ascontiguousarray(x) for x in xs], np.ascontiguousarray(w)
    x_shape = (xs[0].shape[0], sum(x.shape[1] for x in xs), *xs[0].shape[2:])
    dxs, dw, db = convolve_backward(np.ascontiguousarray(dy), None, xs, x_shape, w, w.shape, stride,
                                    _top_left(padding), dilation, groups, any(need_dxs), need_dw, need_db)
    dxs = None if dxs is None else tuple(dx if need else None for dx, need in zip(dxs, need_dxs))
    return dxs, dw, db


def conv2d_bias_relu_forward(x, w, b, stride, padding, dilation, groups):
    """y = relu(conv2d(x, w) + b) (b may be None), the bias and ReLU applied in the conv's own pass."""
    return conv2d_bias_act_forward(x, w, b, stride, padding, dilation, groups, "relu")


def conv2d_bias_act_forward(x, w, b, stride, padding, dilation, groups, activation):
    """y = act(conv2d(x, w) + b), act None, "relu" or "relu6" (b may be None), applied in the conv's own
    pass: a convolution with a batch norm folded into it, for inference (layers.Conv2D.forward_folded)."""
    return convolve(np.ascontiguousarray(x), np.ascontiguousarray(w), b, FUSED_CODES[activation], stride, padding,
                    dilation, groups)


def conv2d_bias_relu_backward(dy, y, x, w, stride, padding, dilation, groups, need_dx, need_dw, need_db):
    """Gradients of y = relu(conv2d(x, w) + b), given dy and the output y (not the pre-activation z):
    dz = dy · [y > 0] (relu(z) > 0 exactly where z > 0), then conv2d's gradients of dz -> (dx, dw, db)."""
    x, w = np.ascontiguousarray(x), np.ascontiguousarray(w)
    return convolve_backward(np.ascontiguousarray(dy), np.ascontiguousarray(y), x, x.shape, w, w.shape,
                             stride, _top_left(padding), dilation, groups, need_dx, need_dw, need_db)


def conv2d_bias_relu_maxpool2_forward(x, w, b, stride, padding, dilation, groups):
    """max_pool2d(relu(conv2d(x, w) + b), 2) -> (N, F, OH // 2, OW // 2): the 2×2 max pooling taken as each
    piece of the conv's output is made, so the full-size output is never written (inference: the pooled
    map is all the next layer needs). pool(relu(z + b)) = relu(max(z) + b), ReLU and + b being monotone.
    Winograd's 2×2 output tiles are exactly the pooling windows; the direct kernel pools its wide plane
    buffer; the algorithms without `forward_maxpool2` run the conv, then the pooling kernel."""
    x, w = np.ascontiguousarray(x), np.ascontiguousarray(w)
    N, F = x.shape[0], w.shape[0]
    padding, y_shape = _geometry(x.shape, w.shape, stride, padding, dilation)
    pooled = output((N, F, y_shape[2] // 2, y_shape[3] // 2), x.dtype)
    algorithm = choose(x.shape, w.shape, y_shape, stride, padding, groups, dilation)
    relu = FUSED_CODES["relu"]
    if algorithm.forward_maxpool2 is not None:
        return algorithm.forward_maxpool2(x, w, b, relu, stride, padding, dilation, y_shape, pooled)
    pooled[...] = max_pool2d_forward(convolve(x, w, b, relu, stride, padding, dilation, groups, y_shape),
                                     (2, 2), (2, 2), (0, 0))[0]
    return pooled


def conv2d_channels_last_separable_forward(x, we, be, wd, bd, wp, bp, stride, padding, dilation, activations):
    """y = act_p(1×1 conv(act_d(depthwise(act_e(1×1 conv(x, we) + be), wd) + bd), wp) + bp), x (N, H, W, C) ->
    (N, OH, OW, F), in one pass (separable.py); we and be None for no expand; stride, padding and dilation
    the depthwise's; activations (act_e, act_d, act_p), each None, "relu" or "relu6"."""
    x, we, wd, wp = (None if a is None else np.ascontiguousarray(a) for a in (x, we, wd, wp))
    return separable_forward(x, we, be, wd, bd, wp, bp, stride, padding, dilation,
                             tuple(FUSED_CODES[a] for a in activations))

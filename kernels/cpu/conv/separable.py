"""A depthwise-separable stack in one pass on (N, H, W, C) maps, for inference: MobileNetV2's inverted residual
block, [1×1 expand] → depthwise KH×KW → 1×1 project, each conv with its bias and activation,

    e = act_e(x We + be)                          x (N, H, W, C), We (C, E)   (no expand: e = x, E = C)
    d = act_d(depthwise(e, taps, stride) + bd)    d (N, OH, OW, E)
    y = act_p(d Wp + bp)                          Wp (E, F)  ->  y (N, OH, OW, F)

computed band by band of output rows, so that e and d never go to memory whole.

Why: the expanded map e has t = 4–6 times the block's channels at the input's size: the biggest array of the
block. Unfused, the expand writes it to memory and the depthwise reads it back; then the depthwise writes d
and the project reads it. A band of R output rows needs only the (R − 1)·s + KH input rows under it: their
expanded rows, the band's d and its output rows fit in a core's L2 cache (BAND_BYTES), so all three convs
run on data that is already there. Neighbouring bands share KH − s input rows; each band expands its own
(the rows in the overlap are computed twice, the price of bands that are independent pieces of work).

Each band is one piece for a thread of kernels/cpu/threads.py: its two GEMMs are one-thread BLAS calls and its
depthwise and epilogues are channels_last.py's serial kernels, which take the band's rows as an image of
their own (its top padding shifted to where the band starts). Bands are cut from the shapes alone (never
from the thread count), so the outputs do not depend on how many threads run.
"""
import numpy as np

from .. import threads
from ..workspace import output, prepared, scratch
from . import depthwise3x3
from .channels_last import (DEPTHWISE_CHUNK, _bias_act_last_rows, _channels_last_geometry,
                            _depthwise_last_forward_rows, _depthwise_rows_forward_range, _taps_last, _tiled_taps)
from .epilogue import _bias_or_zeros

BAND_BYTES = 1 << 20  # the expanded rows of a band: about one core's L2 cache
MIN_BANDS = 4         # a batch of one image is still cut into this many bands (work for every thread)


def separable_forward(x, we, be, wd, bd, wp, bp, stride, padding, dilation, activations):
    """x (N, H, W, C) -> y (N, OH, OW, F); we (E, C, 1, 1) or None, wd (E, 1, KH, KW), wp (F, E, 1, 1), the biases
    (or None), activations (act_e, act_d, act_p) as FUSED_CODES; stride, padding, dilation the depthwise's."""
    E = wd.shape[0]
    (top, left), (N, OH, OW, _), _ = _channels_last_geometry(x.shape[:3] + (E,), wd.shape, stride, padding,
                                                              dilation, E)
    F = wp.shape[0]
    y = output((N, OH, OW, F), x.dtype)
    expand = None if we is None else (prepared(we, "pointwise_t", _pointwise_t), _bias_or_zeros(be, E, x.dtype))
    depthwise = _Depthwise(wd, _bias_or_zeros(bd, E, x.dtype), stride, (top, left), dilation, x.shape[2], OW)
    project = prepared(wp, "pointwise_t", _pointwise_t), _bias_or_zeros(bp, F, x.dtype)
    bands = _bands(x.shape, E, OH, depthwise.rows_read(1), stride[0], x.dtype.itemsize)
    act_e, act_d, act_p = activations

    def band(k):
        n, o0, o1 = bands[k]
        i0, i1 = depthwise.input_rows(o0, o1, x.shape[1])
        if expand is None:
            e = x[n, i0:i1]
        else:
            e = scratch("separable.expanded", (i1 - i0, x.shape[2], E), x.dtype)
            _pointwise(x[n, i0:i1], *expand, act_e, e)
        d = scratch("separable.depthwise", (o1 - o0, OW, E), x.dtype)
        depthwise(e, i0, o0, act_d, d)
        _pointwise(d, *project, act_p, y[n, o0:o1])

    threads.parallel_for(band, len(bands))
    return y


def _pointwise_t(w):
    """(F, C, 1, 1) -> (C, F), contiguous: the right operand of a 1×1 conv's GEMM."""
    return np.ascontiguousarray(w.reshape(w.shape[0], w.shape[1]).T)


def _pointwise(x, w_t, b, act, y):
    """y = act(x w_t + b) over the pixels of x (..., C) -> y (..., F)."""
    x2, y2 = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
    np.matmul(x2, w_t, out=y2)
    _bias_act_last_rows(y2, b, act, 0, y2.shape[0])


def _bands(x_shape, E, OH, rows_read, sh, itemsize):
    """[(n, o0, o1)]: each image's output rows in bands whose expanded input rows fit BAND_BYTES, and at
    least MIN_BANDS bands in all (when the images have that many rows)."""
    N, H, W, C = x_shape
    row_bytes = W * E * itemsize
    R = max(1, (BAND_BYTES // row_bytes - rows_read) // sh + 1)  # (R − 1)·sh + rows_read rows per band
    per_image = -(-MIN_BANDS // N)
    R = max(1, min(R, -(-OH // per_image)))
    return [(n, o0, min(OH, o0 + R)) for n in range(N) for o0 in range(0, OH, R)]


class _Depthwise:
    """The depthwise conv of a band: d = act(depthwise(e) + b) for output rows [o0, o1) of an image, e holding
    its input rows [i0, i1). Runs channels_last.py's row kernels on the band as if it were a whole image:
    output row o reads band row o·sh + i·dil_h − top', top' = top + i0 − o0·sh."""

    def __init__(self, w, b, stride, top_left, dilation, W, OW):
        self.stride, self.top_left, self.dilation = stride, top_left, dilation
        self.KH, self.E = w.shape[2], w.shape[0]
        taps = prepared(w, "taps_last", _taps_last)[:, :, 0]  # (KH, KW, E)
        self.nine = depthwise3x3.applies((1, 1, W, self.E), w.shape, (1, 1, OW, self.E), stride, top_left, dilation)
        if self.nine:  # MobileNet's 3×3 at stride 1 or 2
            self.taps, self.bias = prepared(w, "nine_taps", depthwise3x3.nine_taps), b
            self.zeros = np.zeros(W * self.E, w.dtype)
        elif stride[1] == 1:  # whole rows as one SIMD loop per tap (channels_last.py), taps tiled to a chunk
            P = min(OW, max(1, DEPTHWISE_CHUNK // self.E))
            self.taps = prepared(w, ("depthwise_tap_rows", P), lambda w: _tiled_taps(taps, P))
            self.bias = prepared(b, ("bias_row", P), lambda b: np.tile(b, P))
        else:
            self.taps, self.bias = taps, b

    def rows_read(self, rows):
        """Input rows under `rows` output rows."""
        return (rows - 1) * self.stride[0] + self.dilation[0] * (self.KH - 1) + 1

    def input_rows(self, o0, o1, H):
        """The input rows [i0, i1) that output rows [o0, o1) read, clipped to the image (none, i0 = i1, for
        rows that read only padding)."""
        first = o0 * self.stride[0] - self.top_left[0]
        i0 = min(max(0, first), H)
        return i0, min(max(i0, first + self.rows_read(o1 - o0)), H)

    def __call__(self, e, i0, o0, act, d):
        rows, W, E = e.shape
        OR, OW = d.shape[0], d.shape[1]
        top_left = (self.top_left[0] + i0 - o0 * self.stride[0], self.top_left[1])
        if self.nine:
            depthwise3x3._rows(e.reshape(rows, W * E), self.taps, self.bias, E, rows, OR, self.stride[0], top_left[0],
                               top_left[1], self.zeros, d.reshape(OR, OW * E), act, 0, OR)
        elif self.stride[1] == 1:
            _depthwise_rows_forward_range(e.reshape(rows, W * E), self.taps, self.bias, E, rows, OR, self.stride[0],
                                          top_left, self.dilation, d.reshape(OR, OW * E), act, 0, OR)
        else:
            _depthwise_last_forward_rows(e.reshape(1, rows, W, E), self.taps, self.bias, self.stride, top_left,
                                         self.dilation, d.reshape(1, OR, OW, E), act, 0, OR)

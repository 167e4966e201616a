"""Resizing of NCHW images, as torch.nn.functional.interpolate: nearest (integer factors) and bilinear.

    nearest, scale (sh, sw):  y[i, j] = x[i // sh, j // sw];  backward: each pixel sums its copies' gradients
    bilinear: each output pixel blends its 4 nearest input pixels (PyTorch's coordinate mapping for
        align_corners False and True); backward: each output's gradient goes back to those 4, weighted.
"""
import math
import numbers

from ..tensor import Function
from ._util import check_nchw


class UpsampleNearest2d(Function):
    def forward(self, x, scale):
        self.scale = scale
        return self.k.interpolate.upsample_nearest2d_forward(x, scale)

    def backward(self, dy):
        return self.k.interpolate.upsample_nearest2d_backward(dy, self.scale)


class UpsampleBilinear2d(Function):
    def forward(self, x, out_hw, align_corners):
        self.x_shape, self.align_corners = tuple(x.shape), align_corners
        return self.k.interpolate.upsample_bilinear2d_forward(x, out_hw, align_corners)

    def backward(self, dy):
        return self.k.interpolate.upsample_bilinear2d_backward(dy, self.x_shape, self.align_corners)


def _pair_of(value, name, kind):
    """A number or a pair of numbers of `kind` -> a pair; a clear error otherwise."""
    values = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(values) != 2 or not all(isinstance(v, kind) and not isinstance(v, bool) for v in values):
        raise ValueError(f"interpolate: {name} must be a number or a pair, got {value!r}")
    if min(values) <= 0:
        raise ValueError(f"interpolate: {name} must be positive, got {value!r}")
    return values


def _output_size(input, size, scale_factor):
    """(OH, OW) and, when given, the scale factors (sh, sw)."""
    if (size is None) == (scale_factor is None):
        raise ValueError("interpolate: give exactly one of size and scale_factor")
    if size is not None:
        return tuple(int(s) for s in _pair_of(size, "size", numbers.Integral)), None
    scale = _pair_of(scale_factor, "scale_factor", numbers.Real)
    out_hw = (math.floor(input.shape[2] * scale[0]), math.floor(input.shape[3] * scale[1]))
    if min(out_hw) < 1:
        raise ValueError(f"interpolate: scale_factor {scale_factor!r} makes an empty output from shape {input.shape}")
    return out_hw, scale


def _integer_scale(input, out_hw, scale):
    """Nearest: the integer factors (sh, sw) with output = input × factor, or a clear error."""
    H, W = input.shape[2], input.shape[3]
    if scale is not None:
        if not all(float(s).is_integer() for s in scale):
            raise ValueError(f"interpolate(mode='nearest') supports integer scale factors only, got {scale}")
        return int(scale[0]), int(scale[1])
    if out_hw[0] % H or out_hw[1] % W:
        raise ValueError(f"interpolate(mode='nearest') supports sizes that are integer multiples of the input "
                         f"only: size {out_hw} for input shape {input.shape}")
    return out_hw[0] // H, out_hw[1] // W


def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None):
    """Resize input (N, C, H, W) to `size` (OH, OW) or by `scale_factor`; mode 'nearest' or 'bilinear'.

    Bilinear with a scale_factor computes the output size ⌊H·s⌋ and maps coordinates with H/OH (PyTorch's
    recompute_scale_factor=True; the same as PyTorch's default whenever H·s is a whole number).
    """
    check_nchw(input, "interpolate")
    if mode not in ("nearest", "bilinear"):
        raise ValueError(f"interpolate: mode {mode!r} is not supported (use 'nearest' or 'bilinear')")
    if mode == "nearest" and align_corners is not None:
        raise ValueError("interpolate: align_corners can only be set with mode='bilinear'")
    out_hw, scale = _output_size(input, size, scale_factor)
    if mode == "nearest":
        return UpsampleNearest2d.apply(input, _integer_scale(input, out_hw, scale))
    return UpsampleBilinear2d.apply(input, out_hw, bool(align_corners))

"""Resizing of NCHW images, as torch.nn.functional.interpolate: nearest (integer factors) and bilinear; and
of (N, H, W, C) ones (interpolate_channels_last, Keras' UpSampling2D(data_format="channels_last")).

    nearest, scale (sh, sw):  y[i, j] = x[i // sh, j // sw];  backward: each pixel sums its copies' gradients
    bilinear: each output pixel blends its 4 nearest input pixels (PyTorch's coordinate mapping for
        align_corners False and True); backward: each output's gradient goes back to those 4, weighted.
"""
import math
import numbers

from ..tensor import Function, Tensor
from ._util import check_nchw


class UpsampleNearest2d(Function):
    def forward(self, x, scale):
        self.scale = scale
        return self.k.interpolate.upsample_nearest2d_forward(x, scale)

    def backward(self, dy):
        return self.k.interpolate.upsample_nearest2d_backward(dy, self.scale)


class UpsampleNearest2dLast(Function):
    """UpsampleNearest2d with the channels last: x (N, H, W, C) -> (N, H·sh, W·sw, C)."""

    def forward(self, x, scale):
        self.scale = scale
        return self.k.interpolate.upsample_nearest2d_last_forward(x, scale)

    def backward(self, dy):
        return self.k.interpolate.upsample_nearest2d_last_backward(dy, self.scale)


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


def _output_size(hw, shape, size, scale_factor):
    """(OH, OW) of an input of spatial size hw (H, W) and, when given, the scale factors (sh, sw); shape: the
    input's, for the errors."""
    if (size is None) == (scale_factor is None):
        raise ValueError("interpolate: give exactly one of size and scale_factor")
    if size is not None:
        return tuple(int(s) for s in _pair_of(size, "size", numbers.Integral)), None
    scale = _pair_of(scale_factor, "scale_factor", numbers.Real)
    out_hw = (math.floor(hw[0] * scale[0]), math.floor(hw[1] * scale[1]))
    if min(out_hw) < 1:
        raise ValueError(f"interpolate: scale_factor {scale_factor!r} makes an empty output from shape {shape}")
    return out_hw, scale


def _integer_scale(hw, shape, out_hw, scale):
    """Nearest: the integer factors (sh, sw) with output = input × factor, or a clear error."""
    H, W = hw
    if scale is not None:
        if not all(float(s).is_integer() for s in scale):
            raise ValueError(f"interpolate(mode='nearest') supports integer scale factors only, got {scale}")
        return int(scale[0]), int(scale[1])
    if out_hw[0] % H or out_hw[1] % W:
        raise ValueError(f"interpolate(mode='nearest') supports sizes that are integer multiples of the input "
                         f"only: size {out_hw} for input shape {shape}")
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
    hw = input.shape[2:]
    out_hw, scale = _output_size(hw, input.shape, size, scale_factor)
    if mode == "nearest":
        return UpsampleNearest2d.apply(input, _integer_scale(hw, input.shape, out_hw, scale))
    return UpsampleBilinear2d.apply(input, out_hw, bool(align_corners))


def interpolate_channels_last(input, size=None, scale_factor=None, mode="nearest", align_corners=None):
    """interpolate with the channels last, as Keras' UpSampling2D(data_format="channels_last"): input
    (N, H, W, C) -> (N, OH, OW, C), the other arguments as interpolate's. Nearest is one op on the NHWC
    arrays; bilinear the NCHW op between two transposes (the same values either way)."""
    if not isinstance(input, Tensor) or input.ndim != 4:
        raise ValueError(f"interpolate_channels_last expects an (N, H, W, C) Tensor, got "
                         f"{getattr(input, 'shape', type(input).__name__)}")
    if mode != "nearest":
        first = interpolate(input.transpose(0, 3, 1, 2), size, scale_factor, mode, align_corners)
        return first.transpose(0, 2, 3, 1)
    if align_corners is not None:
        raise ValueError("interpolate: align_corners can only be set with mode='bilinear'")
    hw = input.shape[1:3]
    out_hw, scale = _output_size(hw, input.shape, size, scale_factor)
    return UpsampleNearest2dLast.apply(input, _integer_scale(hw, input.shape, out_hw, scale))

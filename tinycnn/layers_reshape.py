"""Shape layers as Keras': Reshape, Permute, ZeroPadding2D, Cropping2D.

Shapes and dims are Keras' (channels last, batch excluded, `Permute` dims counted from 1). Image maps are
NCHW inside (tinycnn/keras_layout.py), so Reshape and Permute view a 4-D tensor as NHWC first and turn a 4-D
result back to NCHW: the elements come out in Keras' order, so weights converted from Keras line up.

    Reshape(target_shape)     (N, *s) -> (N, *target_shape), one entry may be -1
    Permute(dims)             (N, d1, ..., dk) -> (N, d_dims[0], ..., d_dims[k−1])
    ZeroPadding2D(padding)    (N, H, W, C) -> (N, H + top + bottom, W + left + right, C), zeros around
    Cropping2D(cropping)      (N, H, W, C) -> (N, H − top − bottom, W − left − right, C)

`padding`/`cropping`: an int (all four sides), (rows, cols) (symmetric), or ((top, bottom), (left, right)).
ZeroPadding2D and Cropping2D also take data_format="channels_last": then the tensors they see are (N, H, W, C)
(as in a functional model running channels-last convs, tinycnn/functional_model.py).
Gradients come from the engine's reshape, transpose, pad and slicing ops.
"""
import math

from . import functional as F
from .keras_layout import from_keras_order, to_keras_order
from .layers import Layer, _check_data_format, _data_format_config, _require_rank


class Reshape(Layer):
    def __init__(self, target_shape, name=None, input_shape=None):
        super().__init__(name, input_shape)
        self.target_shape = tuple(int(s) for s in target_shape)
        if sum(s == -1 for s in self.target_shape) > 1 or any(s == 0 or s < -1 for s in self.target_shape):
            raise ValueError(f"Reshape: target_shape {self.target_shape} may hold one -1 and positive sizes")

    def build(self, shape):
        size, known = math.prod(shape[1:]), math.prod(s for s in self.target_shape if s != -1)
        if (size % known) if -1 in self.target_shape else (size != known):
            raise ValueError(f"Reshape: {size} values per sample cannot take the shape {self.target_shape}")

    def forward(self, x):
        return from_keras_order(to_keras_order(x).reshape((x.shape[0],) + self.target_shape))

    def config(self):
        return dict(super().config(), target_shape=list(self.target_shape))


class Permute(Layer):
    def __init__(self, dims, name=None, input_shape=None):
        super().__init__(name, input_shape)
        self.dims = tuple(int(d) for d in dims)
        if sorted(self.dims) != list(range(1, len(self.dims) + 1)):
            raise ValueError(f"Permute: dims {self.dims} must be a permutation of 1..{len(self.dims)} "
                             "(the batch axis 0 stays first)")

    def build(self, shape):
        if len(shape) != len(self.dims) + 1:
            raise ValueError(f"Permute(dims={self.dims}) expects inputs of rank {len(self.dims) + 1} "
                             f"(batch included), got shape {tuple(shape)}")

    def forward(self, x):
        return from_keras_order(to_keras_order(x).transpose((0,) + self.dims))

    def config(self):
        return dict(super().config(), dims=list(self.dims))


def _sides(value, what):
    """Keras' int / (rows, cols) / ((top, bottom), (left, right)) -> ((top, bottom), (left, right))."""
    if isinstance(value, int):
        value = ((value, value), (value, value))
    elif len(value) == 2 and all(isinstance(v, int) for v in value):
        value = ((value[0], value[0]), (value[1], value[1]))
    try:
        (top, bottom), (left, right) = value
        sides = ((int(top), int(bottom)), (int(left), int(right)))
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be an int, (rows, cols) or ((top, bottom), (left, right)), "
                         f"got {value!r}") from None
    if min(min(pair) for pair in sides) < 0:
        raise ValueError(f"{what} must not be negative, got {sides}")
    return sides


class ZeroPadding2D(Layer):
    def __init__(self, padding=(1, 1), data_format="channels_first", name=None, input_shape=None):
        super().__init__(name, input_shape)
        self.padding = _sides(padding, "ZeroPadding2D padding")
        self.data_format = _check_data_format(data_format)

    def build(self, shape):
        _require_rank(shape, 4, self)

    def forward(self, x):
        (top, bottom), (left, right) = self.padding
        if self.data_format == "channels_first":
            return F.pad(x, (left, right, top, bottom))
        # (N, H, W, C): F.pad pads the last two axes, so pad W as the 3rd of (N·H, 1, W, C), H as the 3rd of
        # (N, 1, H, W'·C) (reshapes of a contiguous tensor: no copy)
        n, h, w, c = x.shape
        x = F.pad(x.reshape(n * h, 1, w, c), (0, 0, left, right)).reshape(n, 1, h, (w + left + right) * c)
        return F.pad(x, (0, 0, top, bottom)).reshape(n, h + top + bottom, w + left + right, c)

    def config(self):
        return dict(super().config(), padding=[list(p) for p in self.padding],
                    **_data_format_config(self.data_format))


class Cropping2D(Layer):
    def __init__(self, cropping=((0, 0), (0, 0)), data_format="channels_first", name=None, input_shape=None):
        super().__init__(name, input_shape)
        self.cropping = _sides(cropping, "Cropping2D cropping")
        self.data_format = _check_data_format(data_format)

    def build(self, shape):
        _require_rank(shape, 4, self)
        (top, bottom), (left, right) = self.cropping
        h, w = shape[2:4] if self.data_format == "channels_first" else shape[1:3]
        if top + bottom >= h or left + right >= w:
            raise ValueError(f"Cropping2D: cropping {self.cropping} leaves nothing of a {h}×{w} map")

    def forward(self, x):
        (top, bottom), (left, right) = self.cropping
        if self.data_format == "channels_first":
            return x[:, :, top:x.shape[2] - bottom, left:x.shape[3] - right]
        return x[:, top:x.shape[1] - bottom, left:x.shape[2] - right, :]

    def config(self):
        return dict(super().config(), cropping=[list(p) for p in self.cropping],
                    **_data_format_config(self.data_format))

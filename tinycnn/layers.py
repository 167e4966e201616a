"""Keras-style layers, built on tinycnn.functional.

Arguments follow Keras (`filters, kernel_size, strides, padding, activation`), so the tutorial's model reads
the same. Inside, tensors are NCHW (the layout most kernels serve best); `Sequential` converts the
channels-last arrays (N, H, W, C) the tutorial builds once per batch. Conv2D, DepthwiseConv2D and
GlobalAveragePooling2D also take Keras' `data_format="channels_last"` (and BatchNormalization `axis=-1`):
(N, H, W, C) tensors, the layout in which MobileNet's 1×1 and depthwise convs run fastest. A layer creates its weights when it first sees an
input (`build`), so only the first layer of a Sequential needs `input_shape`.

Weights start as in Keras: Glorot-uniform kernels, zero biases, batch norm γ = 1, β = 0.
"""
import contextlib
import math

import numpy as np

from . import functional as F
from .keras_tensor import call_symbolic, is_symbolic
from .nn import Module, Parameter
from .ops.batchnorm import batch_norm_activation
from .ops.conv import (conv2d_activation, conv2d_channels_last, conv2d_channels_last_separable, conv2d_relu,
                       conv2d_relu_maxpool2)
from .ops.interpolate import interpolate_channels_last
from .random import generator
from .tensor import Tensor

ACTIVATIONS = {
    None: None, "linear": None,
    "relu": F.relu, "relu6": F.relu6, "leaky_relu": F.leaky_relu, "sigmoid": F.sigmoid, "tanh": F.tanh,
    "softmax": lambda x: F.softmax(x, dim=1),
}


def activate(name, x):
    """Apply a named activation. The pre-activation is kept on the output (`_logits`), so that a loss can
    fuse sigmoid/softmax with cross-entropy and stay stable for large logits (as Keras does)."""
    fn = ACTIVATIONS[name]
    if fn is None:
        return x
    y = fn(x)
    y._logits = (name, x)
    return y


def _check_activation(name):
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(k for k in ACTIVATIONS if k)}")
    return name


def _initializer(name, shape, fan_in, fan_out):
    rng = generator()
    if name == "glorot_uniform":
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, shape).astype(np.float32)
    if name == "he_uniform":
        limit = math.sqrt(6.0 / fan_in)
        return rng.uniform(-limit, limit, shape).astype(np.float32)
    if name == "he_normal":
        return (rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)).astype(np.float32)
    if name == "zeros":
        return np.zeros(shape, np.float32)
    raise ValueError(f"unknown initializer {name!r}: glorot_uniform, he_uniform, he_normal or zeros")


def same_padding(size, kernel, stride, dilation=1):
    """TensorFlow's 'same' padding along one axis: (before, after), output = ceil(size / stride)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class Layer(Module):
    """A Module built lazily from its first input's shape; errors name the layer.

    `fuses_as` says what the inference pass (fuse.py) may fuse this layer as: "conv", "batch_norm",
    "max_pool", "activation" or None. A subclass is fused only if it declares it again (its forward may differ)."""
    _counts = {}
    fuses_as = None

    def __init__(self, name=None, input_shape=None):
        super().__init__()
        kind = type(self).__name__.lower()
        Layer._counts[kind] = Layer._counts.get(kind, 0) + 1
        self.name = name or f"{kind}_{Layer._counts[kind]}"
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.built = False

    def build(self, input_shape):
        """Create the weights for an NCHW (or (N, features)) input shape."""

    def __call__(self, x, **kwargs):
        """Build on the first input, then forward(x, **kwargs), naming this layer in any error."""
        if is_symbolic(x):  # the functional API: record the call (tinycnn/keras_tensor.py)
            return call_symbolic(self, x)
        if not isinstance(x, Tensor):
            x = Tensor(x)
        with self.errors_named(x.shape):
            self._build_once(x.shape)
            return self.forward(x, **kwargs)

    def _build_once(self, shape):
        if not self.built:
            self.build(shape)
            self.built = True
            if self.device != "cpu":
                self.to(self.device)

    @contextlib.contextmanager
    def errors_named(self, input_shape):
        """Re-raise a ValueError or TypeError inside the block with this layer's name and input shape."""
        try:
            yield
        except (ValueError, TypeError) as error:
            if getattr(error, "_layer_named", False):
                raise
            wrapped = type(error)(f"layer '{self.name}' ({type(self).__name__}), input shape {input_shape}: {error}")
            wrapped._layer_named = True
            raise wrapped from error

    def config(self):
        """The Keras-style constructor arguments of this layer (JSON-able)."""
        return {"name": self.name}

    def get_config(self):
        config = self.config()
        if self.input_shape is not None:
            config["input_shape"] = list(self.input_shape)
        return config


class Conv2D(Layer):
    """2-D convolution: (N, C, H, W) -> (N, filters, H', W'), then the activation; with
    data_format="channels_last", (N, H, W, C) -> (N, H', W', filters). The kernel is (filters, C/groups, KH, KW)
    in both layouts."""
    fuses_as = "conv"  # fuse.py: folds a batch norm after it; with ReLU, fuses a 2×2 max-pool after it

    def __init__(self, filters, kernel_size, strides=1, padding="valid", activation=None, use_bias=True,
                 dilation_rate=1, groups=1, kernel_initializer="glorot_uniform", data_format="channels_first",
                 name=None, input_shape=None):
        super().__init__(name, input_shape)
        self.filters, self.kernel_size = int(filters), _pair(kernel_size)
        self.strides, self.dilation_rate = _pair(strides), _pair(dilation_rate)
        self.padding, self.groups, self.use_bias = _check_padding(padding), int(groups), bool(use_bias)
        self.activation, self.kernel_initializer = _check_activation(activation), kernel_initializer
        self.data_format = _check_data_format(data_format)
        if self.channels_last and self.activation == "softmax":  # F.softmax(x, dim=1): the channels first
            raise ValueError("activation 'softmax' takes the channels on axis 1: with data_format='channels_last' "
                             "apply softmax over the last axis after the layer")

    @property
    def channels_last(self):
        return self.data_format == "channels_last"

    def build(self, shape):
        _require_rank(shape, 4, self)
        channels = shape[3] if self.channels_last else shape[1]
        if channels % self.groups or self.filters % self.groups:
            raise ValueError(f"{channels} input channels and {self.filters} filters must divide by groups={self.groups}")
        kh, kw = self.kernel_size
        fan_in, fan_out = channels // self.groups * kh * kw, self.filters // self.groups * kh * kw
        w_shape = (self.filters, channels // self.groups, kh, kw)
        self.kernel = Parameter(_initializer(self.kernel_initializer, w_shape, fan_in, fan_out))
        self.bias = Parameter(np.zeros(self.filters, np.float32)) if self.use_bias else None

    def __call__(self, x, **kwargs):
        """Layer's; x may also be a list of (N, C_i, H, W) tensors (channels first): the layer applied to their
        channel concatenation, which the conv reads part by part instead of building it (ops/conv.py conv2d; a
        U-Net's decoder conv on [upsampled, skip])."""
        if not isinstance(x, (list, tuple)) or is_symbolic(x):
            return super().__call__(x, **kwargs)
        parts = [p if isinstance(p, Tensor) else Tensor(p) for p in x]
        shapes = [tuple(p.shape) for p in parts]
        with self.errors_named(shapes):
            if self.channels_last or not parts or any(len(shape) != 4 for shape in shapes):
                raise ValueError("a list input (the parts of a channel concatenation) needs 4-D (N, C, H, W) "
                                 "tensors and data_format='channels_first'")
            self._build_once((shapes[0][0], sum(shape[1] for shape in shapes), *shapes[0][2:]))
            return self.forward(parts, **kwargs)

    def forward(self, x):
        if isinstance(x, list):  # the parts of a channel concatenation (__call__)
            _, padding = _apply_padding(x[0], self.padding, self.kernel_size, self.strides, self.dilation_rate)
            y = F.conv2d(x, self.kernel, self.bias, self.strides, padding, self.dilation_rate, self.groups)
            return activate(self.activation, y)
        x, padding = _apply_padding(x, self.padding, self.kernel_size, self.strides, self.dilation_rate,
                                    channels_last=self.channels_last)
        if self.channels_last:
            fused = self.activation if self.activation in ("relu", "relu6") else None
            y = conv2d_channels_last(x, self.kernel, self.bias, self.strides, padding, self.dilation_rate,
                                     self.groups, fused)
            return y if fused else activate(self.activation, y)
        if self.activation == "relu":  # one fused op: bias and ReLU in the conv's own pass (ops/conv.py)
            return conv2d_relu(x, self.kernel, self.bias, self.strides, padding, self.dilation_rate, self.groups)
        y = F.conv2d(x, self.kernel, self.bias, self.strides, padding, self.dilation_rate, self.groups)
        return activate(self.activation, y)

    def forward_fused(self, x, kernel, bias, activation):
        """This layer's convolution with the weights given (a batch norm folded in, fuse.py), then
        `activation` (None, "relu" or "relu6") in the conv's own pass; x a tensor, or a list of the parts of a
        channel concatenation (built here: the fused convs take one input)."""
        x = F.cat(x, axis=1) if isinstance(x, list) else x
        x, padding = _apply_padding(x, self.padding, self.kernel_size, self.strides, self.dilation_rate,
                                    channels_last=self.channels_last)
        fused = conv2d_channels_last if self.channels_last else conv2d_activation
        return fused(x, kernel, bias, self.strides, padding, self.dilation_rate, self.groups, activation)

    def forward_separable(self, x, expand, depthwise, project):
        """expand (optional) → depthwise → project as one op, each a (kernel, bias, activation) triple, this
        (depthwise, channels-last) layer's stride, padding and dilation the depthwise's (ops/conv.py
        conv2d_channels_last_separable): an inference step of fuse.py."""
        _, padding = _apply_padding(x, self.padding, self.kernel_size, self.strides, self.dilation_rate,
                                    channels_last=True)
        return conv2d_channels_last_separable(x, depthwise, project, expand, self.strides, padding, self.dilation_rate)

    def forward_pooled(self, x, kernel=None, bias=None):
        """This layer (ReLU), then MaxPooling2D(2), as one op (ops/conv.py): an inference step of fuse.py. With
        `kernel` and `bias` (a batch norm folded in, fuse.py) instead of the layer's own."""
        x, padding = _apply_padding(x, self.padding, self.kernel_size, self.strides, self.dilation_rate)
        if kernel is None:
            kernel, bias = self.kernel, self.bias
        return conv2d_relu_maxpool2(x, kernel, bias, self.strides, padding, self.dilation_rate, self.groups)

    def config(self):
        return dict(super().config(), filters=self.filters, kernel_size=list(self.kernel_size),
                    strides=list(self.strides), padding=self.padding, activation=self.activation,
                    use_bias=self.use_bias, dilation_rate=list(self.dilation_rate), groups=self.groups,
                    kernel_initializer=self.kernel_initializer, **_data_format_config(self.data_format))


class DepthwiseConv2D(Conv2D):
    """Depthwise convolution (one filter per input channel, MobileNet): Conv2D with groups = channels."""
    fuses_as = "conv"

    def __init__(self, kernel_size, strides=1, padding="valid", depth_multiplier=1, activation=None,
                 use_bias=True, dilation_rate=1, kernel_initializer="glorot_uniform", data_format="channels_first",
                 name=None, input_shape=None):
        super().__init__(1, kernel_size, strides, padding, activation, use_bias, dilation_rate, 1,
                         kernel_initializer, data_format, name, input_shape)
        self.depth_multiplier = int(depth_multiplier)

    def build(self, shape):
        _require_rank(shape, 4, self)
        channels = shape[3] if self.channels_last else shape[1]
        self.filters, self.groups = channels * self.depth_multiplier, channels
        super().build(shape)

    def config(self):
        config = super().config()
        for key in ("filters", "groups"):
            config.pop(key)
        return dict(config, depth_multiplier=self.depth_multiplier)


class Conv2DTranspose(Layer):
    """Transposed convolution (learned upsampling): (N, C, H, W) -> (N, filters, ~H·s, ~W·s)."""

    def __init__(self, filters, kernel_size, strides=1, padding="valid", output_padding=None, activation=None,
                 use_bias=True, kernel_initializer="glorot_uniform", name=None, input_shape=None):
        super().__init__(name, input_shape)
        self.filters, self.kernel_size, self.strides = int(filters), _pair(kernel_size), _pair(strides)
        self.padding, self.use_bias = _check_padding(padding), bool(use_bias)
        self.output_padding = None if output_padding is None else _pair(output_padding)
        if self.output_padding is not None and any(not 0 <= p < s for p, s in zip(self.output_padding, self.strides)):
            raise ValueError(f"Conv2DTranspose: output_padding {self.output_padding} must be ≥ 0 and smaller than "
                             f"the strides {self.strides}")
        self.activation, self.kernel_initializer = _check_activation(activation), kernel_initializer

    def build(self, shape):
        _require_rank(shape, 4, self)
        kh, kw = self.kernel_size
        w_shape = (shape[1], self.filters, kh, kw)
        self.kernel = Parameter(_initializer(self.kernel_initializer, w_shape, self.filters * kh * kw, shape[1] * kh * kw))
        self.bias = Parameter(np.zeros(self.filters, np.float32)) if self.use_bias else None

    def _geometry(self, size, axis):
        """Keras' output length along `axis` for an input of length `size`, and where it starts in the full
        transposed conv (its length full = (size − 1)·s + k): output[j] = full[j + start], 0 past it (then the bias).

            output_padding None:  'valid' size·s + max(k − s, 0),   'same' size·s
            output_padding p:     (size − 1)·s + k − 2·pad + p,    pad = 0 ('valid') or k // 2 ('same')

        'same' starts where TensorFlow's gradient of a 'same' conv does: max(full − length, 0) // 2."""
        k, s = self.kernel_size[axis], self.strides[axis]
        full = (size - 1) * s + k
        if self.output_padding is None:
            length = size * s + max(k - s, 0) if self.padding == "valid" else size * s
        else:
            pad = 0 if self.padding == "valid" else k // 2
            length = full - 2 * pad + self.output_padding[axis]
        start = max(full - length, 0) // 2 if self.padding == "same" else 0
        return length, start

    def forward(self, x):
        """One conv_transpose2d with torch's (padding, output_padding) when they express Keras' window;
        otherwise (e.g. kernel 3, stride 2, 'same': the full output's last row dropped) the nearest such
        window, cropped or zero-extended at the bottom/right, then the bias."""
        (length_h, start_h), (length_w, start_w) = (self._geometry(x.shape[2], 0), self._geometry(x.shape[3], 1))
        if min(length_h, length_w) < 1:
            raise ValueError(f"the output would be {length_h}×{length_w} (kernel {self.kernel_size}, strides "
                             f"{self.strides}, padding '{self.padding}', output_padding {self.output_padding})")
        padding, extra, direct = (start_h, start_w), [], True
        for length, start, size, axis in ((length_h, start_h, x.shape[2], 0), (length_w, start_w, x.shape[3], 1)):
            k, s = self.kernel_size[axis], self.strides[axis]
            needed = length - ((size - 1) * s + k - 2 * start)  # torch's output_padding for this window
            extra.append(min(max(needed, 0), s - 1))
            direct = direct and 0 <= needed < s
        y = F.conv_transpose2d(x, self.kernel, self.bias if direct else None, self.strides, padding, tuple(extra))
        if not direct:
            y = self._fit_bottom_right(y, length_h, length_w)
            if self.bias is not None:
                y = y + self.bias.reshape(1, -1, 1, 1)
        return activate(self.activation, y)

    @staticmethod
    def _fit_bottom_right(y, height, width):
        """An (N, C, H, W) tensor cut or zero-extended at the bottom and right to (N, C, height, width)."""
        y = y[:, :, :min(height, y.shape[2]), :min(width, y.shape[3])]
        if y.shape[2] < height or y.shape[3] < width:
            y = F.pad(y, (0, width - y.shape[3], 0, height - y.shape[2]))
        return y

    def config(self):
        return dict(super().config(), filters=self.filters, kernel_size=list(self.kernel_size),
                    strides=list(self.strides), padding=self.padding, activation=self.activation,
                    output_padding=None if self.output_padding is None else list(self.output_padding),
                    use_bias=self.use_bias, kernel_initializer=self.kernel_initializer)


class _Pooling2D(Layer):
    def __init__(self, pool_size=2, strides=None, padding="valid", name=None, input_shape=None):
        super().__init__(name, input_shape)
        self.pool_size = _pair(pool_size)
        self.strides = _pair(strides) if strides is not None else self.pool_size
        self.padding = _check_padding(padding)

    def config(self):
        return dict(super().config(), pool_size=list(self.pool_size), strides=list(self.strides),
                    padding=self.padding)


class MaxPooling2D(_Pooling2D):
    fuses_as = "max_pool"

    def forward(self, x):
        _require_rank(x.shape, 4, self)
        x, padding = _apply_padding(x, self.padding, self.pool_size, self.strides, (1, 1), fill=-np.inf)
        return F.max_pool2d(x, self.pool_size, self.strides, padding)


class AveragePooling2D(_Pooling2D):
    def forward(self, x):
        _require_rank(x.shape, 4, self)
        if self.padding == "valid":
            return F.avg_pool2d(x, self.pool_size, self.strides)
        (top, bottom), (left, right) = (same_padding(x.shape[2], self.pool_size[0], self.strides[0]),
                                        same_padding(x.shape[3], self.pool_size[1], self.strides[1]))
        if top != bottom or left != right:
            raise ValueError(f"'same' average pooling needs symmetric padding here; input {x.shape} with "
                             f"pool {self.pool_size} and strides {self.strides} would pad unevenly")
        # Keras averages only the real pixels of a window that overlaps the border
        return F.avg_pool2d(x, self.pool_size, self.strides, (top, left), count_include_pad=False)


class GlobalAveragePooling2D(Layer):
    """(N, C, H, W) -> (N, C): the mean of each channel; (N, H, W, C) -> (N, C) with data_format="channels_last"."""

    def __init__(self, data_format="channels_first", name=None, input_shape=None):
        super().__init__(name, input_shape)
        self.data_format = _check_data_format(data_format)

    def forward(self, x):
        _require_rank(x.shape, 4, self)
        if self.data_format == "channels_last":
            return x.mean(axis=(1, 2))
        return F.adaptive_avg_pool2d(x, 1).reshape(x.shape[0], x.shape[1])

    def config(self):
        return dict(super().config(), **_data_format_config(self.data_format))


class Flatten(Layer):
    """(N, ...) -> (N, features). An image map (NCHW inside) is flattened in Keras' (H, W, C) order, so that a
    Dense after it takes converted Keras weights as they are (Keras' Flatten keeps that order in both data
    formats). Files saved before this flattened in (C, H, W) order: their config has no `keras_order`, and
    from_config keeps the old order for them. (PyTorch's order in a Module of one's own: x.flatten(1).)"""

    def __init__(self, keras_order=True, name=None, input_shape=None):
        super().__init__(name, input_shape)
        self.keras_order = bool(keras_order)

    def forward(self, x):
        if self.keras_order and x.ndim == 4:  # (N, C, H·W) -> (N, H·W, C): one strided copy each way
            n, c, h, w = x.shape
            x = x.reshape(n, c, h * w).transpose(0, 2, 1)
        return x.flatten(1)

    @classmethod
    def from_config(cls, config):
        return cls(**dict({"keras_order": False}, **config))

    def config(self):
        return dict(super().config(), keras_order=self.keras_order)


class Dense(Layer):
    """Fully connected: (N, features) -> (N, units), then the activation."""

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 name=None, input_shape=None):
        super().__init__(name, input_shape)
        self.units, self.use_bias = int(units), bool(use_bias)
        self.activation, self.kernel_initializer = _check_activation(activation), kernel_initializer

    def build(self, shape):
        _require_rank(shape, 2, self)
        self.kernel = Parameter(_initializer(self.kernel_initializer, (self.units, shape[1]), shape[1], self.units))
        self.bias = Parameter(np.zeros(self.units, np.float32)) if self.use_bias else None

    def forward(self, x):
        return activate(self.activation, F.linear(x, self.kernel, self.bias))

    def config(self):
        return dict(super().config(), units=self.units, activation=self.activation, use_bias=self.use_bias,
                    kernel_initializer=self.kernel_initializer)


class Dropout(Layer):
    def __init__(self, rate, name=None, input_shape=None):
        super().__init__(name, input_shape)
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"Dropout rate must be in [0, 1), got {rate}")
        self.rate = float(rate)

    def forward(self, x):
        return F.dropout(x, self.rate, self.training)

    def config(self):
        return dict(super().config(), rate=self.rate)


class BatchNormalization(Layer):
    """Batch norm over the channel axis: `axis` 1 (NCHW, or the features of (N, features)), or -1 (the last axis:
    (N, H, W, C) channels-last maps; the kernels see them as (N·H·W, C)).

    Keras' momentum m keeps m of the old running statistics: running = m·running + (1 − m)·batch.
    activation (a tinycnn extension: None, "relu" or "relu6") applies the activation in the batch norm's own
    passes, forward and backward (kernels/cpu/batchnorm.py): the same as BatchNormalization() followed
    by ReLU(), which a Sequential model fuses by itself."""
    fuses_as = "batch_norm"

    def __init__(self, momentum=0.99, epsilon=1e-3, activation=None, axis=1, name=None, input_shape=None):
        super().__init__(name, input_shape)
        self.momentum, self.epsilon = float(momentum), float(epsilon)
        if axis not in (1, -1, 3):
            raise ValueError(f"BatchNormalization: axis must be 1 (channels first) or -1 (channels last), got {axis!r}")
        self.axis = axis
        if activation not in (None, "relu", "relu6"):
            raise ValueError(f"BatchNormalization: activation must be None, 'relu' or 'relu6', got {activation!r}")
        self.activation = activation

    def build(self, shape):
        if len(shape) not in (2, 4):
            layout = "(N, C, H, W)" if self.axis == 1 else "(N, H, W, C)"
            raise ValueError(f"BatchNormalization(axis={self.axis}) expects {layout} or (N, features) inputs, got {shape}")
        if self.axis == 3 and len(shape) != 4:
            raise ValueError(f"BatchNormalization(axis=3) expects (N, H, W, C) inputs, got {shape}")
        channels = shape[self.axis]
        self.gamma = Parameter(np.ones(channels, np.float32))
        self.beta = Parameter(np.zeros(channels, np.float32))
        self.register_buffer("moving_mean", Tensor(np.zeros(channels, np.float32)))
        self.register_buffer("moving_variance", Tensor(np.ones(channels, np.float32)))

    def forward(self, x, activation=None):
        channels_last = self.axis != 1 and x.ndim == 4
        rows = x.reshape(-1, x.shape[3]) if channels_last else x  # (N·H·W, C): the channel axis second
        y = batch_norm_activation(rows, self.moving_mean, self.moving_variance, self.gamma, self.beta,
                                  self.training, 1.0 - self.momentum, self.epsilon, activation or self.activation)
        if self.training:  # the running statistics moved, in place: values folded from them are stale
            self.moving_mean.bump_version()
            self.moving_variance.bump_version()
        return y.reshape(x.shape) if channels_last else y

    def config(self):
        config = dict(super().config(), momentum=self.momentum, epsilon=self.epsilon)
        if self.activation is not None:
            config["activation"] = self.activation
        if self.axis != 1:
            config["axis"] = self.axis
        return config


class UpSampling2D(Layer):
    """Repeats rows and columns by `size` (nearest) or interpolates them (bilinear): (N, C, H, W) ->
    (N, C, H·sh, W·sw); with data_format="channels_last", (N, H, W, C) -> (N, H·sh, W·sw, C)."""

    def __init__(self, size=2, interpolation="nearest", data_format="channels_first", name=None, input_shape=None):
        super().__init__(name, input_shape)
        self.size = _pair(size)
        if interpolation not in ("nearest", "bilinear"):
            raise ValueError(f"interpolation must be 'nearest' or 'bilinear', got {interpolation!r}")
        self.interpolation = interpolation
        self.data_format = _check_data_format(data_format)

    def forward(self, x):
        _require_rank(x.shape, 4, self)
        resize = interpolate_channels_last if self.data_format == "channels_last" else F.interpolate
        if self.interpolation == "nearest":
            return resize(x, scale_factor=self.size, mode="nearest")
        hw = x.shape[1:3] if self.data_format == "channels_last" else x.shape[2:]
        return resize(x, size=(hw[0] * self.size[0], hw[1] * self.size[1]), mode="bilinear", align_corners=False)

    def config(self):
        return dict(super().config(), size=list(self.size), interpolation=self.interpolation,
                    **_data_format_config(self.data_format))


class Activation(Layer):
    fuses_as = "activation"

    def __init__(self, activation, name=None, input_shape=None):
        super().__init__(name, input_shape)
        self.activation = _check_activation(activation)

    def forward(self, x):
        return activate(self.activation, x)

    def config(self):
        return dict(super().config(), activation=self.activation)


class ReLU(Activation):
    """Keras' ReLU: y = max_value for x ≥ max_value, x for threshold ≤ x < max_value, negative_slope·(x −
    threshold) below the threshold. The plain ReLU and ReLU6 are one fused kernel each (and fuse into a conv or
    batch norm before them, fuse.py); any other setting is composed of ops (leaky ReLU, ReLU, a mask)."""
    fuses_as = "activation"

    def __init__(self, max_value=None, negative_slope=0.0, threshold=0.0, name=None, input_shape=None):
        if max_value is not None and float(max_value) < 0:
            raise ValueError(f"ReLU: max_value must be ≥ 0, got {max_value}")
        if float(negative_slope) < 0:
            raise ValueError(f"ReLU: negative_slope must be ≥ 0, got {negative_slope}")
        max_value = None if max_value is None else float(max_value)
        plain = float(negative_slope) == 0.0 and float(threshold) == 0.0 and max_value in (None, 6.0)
        super().__init__(("relu6" if max_value else "relu") if plain else None, name, input_shape)
        self.max_value, self.negative_slope, self.threshold = max_value, float(negative_slope), float(threshold)

    def forward(self, x):
        if self.activation is not None:
            return activate(self.activation, x)
        shifted = x - self.threshold if self.threshold else x
        y = F.leaky_relu(shifted, self.negative_slope) if self.negative_slope else F.relu(shifted)
        if self.threshold:  # at and above the threshold the output is x itself: add the threshold back there
            above = (shifted.numpy() >= 0).astype(x.dtype) * self.threshold
            y = y + Tensor(above, device=x.device)
        if self.max_value is not None:
            y = self.max_value - F.relu(self.max_value - y)  # min(y, max_value)
        return y

    def config(self):
        config = super().config()
        config.pop("activation")
        config["max_value"] = self.max_value
        if self.negative_slope:
            config["negative_slope"] = self.negative_slope
        if self.threshold:
            config["threshold"] = self.threshold
        return config


# ---------------------------------------------------------------------- argument helpers

def _pair(value):
    if isinstance(value, (int, np.integer)):
        return (int(value), int(value))
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return (int(value[0]), int(value[1]))
    raise ValueError(f"expected an int or a pair of ints, got {value!r}")


def _check_data_format(data_format):
    if data_format not in ("channels_first", "channels_last"):
        raise ValueError(f"data_format must be 'channels_first' (N, C, H, W) or 'channels_last' (N, H, W, C), "
                         f"got {data_format!r}")
    return data_format


def _check_padding(padding):
    padding = str(padding).lower()
    if padding not in ("valid", "same"):
        raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
    return padding


def _data_format_config(data_format):
    """{"data_format": ...} when channels last; nothing for the default, so configs stay as they were."""
    return {"data_format": data_format} if data_format != "channels_first" else {}


def _require_rank(shape, rank, layer):
    if len(shape) != rank:
        channels_last = getattr(layer, "data_format", None) == "channels_last"
        layout = ("(N, H, W, C)" if channels_last else "(N, C, H, W)") if rank == 4 else "(N, features)"
        hint = " — add a Flatten() before it" if rank == 2 and len(shape) == 4 else ""
        raise ValueError(f"{type(layer).__name__} expects a {rank}-D input {layout}, got shape {tuple(shape)}{hint}")


def _apply_padding(x, padding, kernel, strides, dilation, fill=0.0, channels_last=False):
    """Keras padding -> (input, padding for the op). Zero padding goes to the op as it is, even when uneven
    (conv2d takes ((top, bottom), (left, right))); any other fill (pooling) is padded here, explicitly."""
    if padding == "valid":
        return x, (0, 0)
    H, W = x.shape[1:3] if channels_last else x.shape[2:4]
    (top, bottom), (left, right) = (same_padding(H, kernel[0], strides[0], dilation[0]),
                                    same_padding(W, kernel[1], strides[1], dilation[1]))
    if fill == 0.0:
        return x, ((top, bottom), (left, right))
    return F.pad(x, (left, right, top, bottom), value=fill), (0, 0)


# ---------------------------------------------------------------------- Keras' other layers, one family per file
from .layers_activation import LeakyReLU, Softmax  # noqa: E402,F401
from .layers_merge import (Add, Average, Concatenate, Maximum, Minimum, Multiply, Subtract, add, average,  # noqa: E402,F401
                           concatenate, maximum, minimum, multiply, subtract)
from .layers_pooling import GlobalMaxPooling2D  # noqa: E402,F401
from .layers_preprocessing import RandomFlip, Rescaling  # noqa: E402,F401
from .layers_reshape import Cropping2D, Permute, Reshape, ZeroPadding2D  # noqa: E402,F401
from .layers_separable_conv import SeparableConv2D  # noqa: E402,F401
from .layers_input import Input, InputLayer  # noqa: E402,F401

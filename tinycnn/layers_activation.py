"""Activation layers with arguments, as Keras': Softmax(axis), LeakyReLU(negative_slope).

(ReLU(max_value=None or 6) and Activation(name) live in tinycnn/layers.py.)

    Softmax(axis=-1)         y = e^x / Σ_axis e^x along Keras' axis: the channels of an image map (the
                             tensor's axis 1, NCHW inside: tinycnn/keras_layout.py), the last axis otherwise
    LeakyReLU(0.3)           y = x for x > 0, negative_slope · x otherwise (Keras 2's name `alpha` too)
"""
from . import functional as F
from .keras_layout import tensor_axis
from .layers import Layer


class Softmax(Layer):
    def __init__(self, axis=-1, name=None, input_shape=None):
        super().__init__(name, input_shape)
        self.axis = int(axis)

    def build(self, shape):
        tensor_axis(self.axis, len(shape))  # an axis out of range fails here, naming the layer

    def forward(self, x):
        dim = tensor_axis(self.axis, x.ndim)
        y = F.softmax(x, dim=dim)
        if dim == 1:  # the class axis the losses read: keep the logits for the fused, stable cross-entropy
            y._logits = ("softmax", x)
        return y

    def config(self):
        return dict(super().config(), axis=self.axis)


class LeakyReLU(Layer):
    def __init__(self, negative_slope=0.3, alpha=None, name=None, input_shape=None):
        super().__init__(name, input_shape)
        self.negative_slope = float(negative_slope if alpha is None else alpha)
        if self.negative_slope < 0:
            raise ValueError(f"LeakyReLU: negative_slope must be ≥ 0, got {self.negative_slope}")

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)

    def config(self):
        return dict(super().config(), negative_slope=self.negative_slope)

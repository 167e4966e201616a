"""SeparableConv2D, as Keras': a depthwise conv (one k×k filter per input channel, `depth_multiplier` of them),
then a pointwise 1×1 conv mixing the channels, then the bias and the activation.

    (N, C, H, W) -> depthwise (C·m, 1, KH, KW), groups C -> (N, C·m, H', W')
                 -> pointwise (filters, C·m, 1, 1)        -> (N, filters, H', W')

Parameters: C·m·KH·KW + C·m·filters (+ filters), as Keras counts them. Both convs are the engine's conv2d, so
the gradients are its backward.
"""
import numpy as np

from . import functional as F
from .layers import (Layer, _apply_padding, _check_activation, _check_padding, _initializer, _pair,
                     _require_rank, activate)
from .nn import Parameter


class SeparableConv2D(Layer):
    def __init__(self, filters, kernel_size, strides=1, padding="valid", depth_multiplier=1, activation=None,
                 use_bias=True, dilation_rate=1, depthwise_initializer="glorot_uniform",
                 pointwise_initializer="glorot_uniform", name=None, input_shape=None):
        super().__init__(name, input_shape)
        self.filters, self.kernel_size = int(filters), _pair(kernel_size)
        self.strides, self.dilation_rate = _pair(strides), _pair(dilation_rate)
        self.padding, self.depth_multiplier = _check_padding(padding), int(depth_multiplier)
        self.activation, self.use_bias = _check_activation(activation), bool(use_bias)
        self.depthwise_initializer, self.pointwise_initializer = depthwise_initializer, pointwise_initializer

    def build(self, shape):
        _require_rank(shape, 4, self)
        channels, (kh, kw), m = shape[1], self.kernel_size, self.depth_multiplier
        self.depthwise_kernel = Parameter(_initializer(self.depthwise_initializer, (channels * m, 1, kh, kw),
                                                       kh * kw, m * kh * kw))
        self.pointwise_kernel = Parameter(_initializer(self.pointwise_initializer, (self.filters, channels * m, 1, 1),
                                                       channels * m, self.filters))
        self.bias = Parameter(np.zeros(self.filters, np.float32)) if self.use_bias else None

    def forward(self, x):
        channels = x.shape[1]
        x, padding = _apply_padding(x, self.padding, self.kernel_size, self.strides, self.dilation_rate)
        y = F.conv2d(x, self.depthwise_kernel, None, self.strides, padding, self.dilation_rate, channels)
        return activate(self.activation, F.conv2d(y, self.pointwise_kernel, self.bias))

    def config(self):
        return dict(super().config(), filters=self.filters, kernel_size=list(self.kernel_size),
                    strides=list(self.strides), padding=self.padding, depth_multiplier=self.depth_multiplier,
                    activation=self.activation, use_bias=self.use_bias, dilation_rate=list(self.dilation_rate),
                    depthwise_initializer=self.depthwise_initializer,
                    pointwise_initializer=self.pointwise_initializer)

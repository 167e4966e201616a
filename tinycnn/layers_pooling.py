"""Keras' global max pooling (GlobalAveragePooling2D lives in tinycnn/layers.py).

    GlobalMaxPooling2D    (N, C, H, W) -> (N, C): the largest value of each channel;
                          with data_format="channels_last", (N, H, W, C) -> (N, C)

The engine's max reduction gives the gradient (to the maxima, split between ties).
"""
from .layers import Layer, _check_data_format, _data_format_config, _require_rank


class GlobalMaxPooling2D(Layer):
    def __init__(self, data_format="channels_first", name=None, input_shape=None):
        super().__init__(name, input_shape)
        self.data_format = _check_data_format(data_format)

    def build(self, shape):
        _require_rank(shape, 4, self)

    def forward(self, x):
        return x.max(axis=(1, 2) if self.data_format == "channels_last" else (2, 3))

    def config(self):
        return dict(super().config(), **_data_format_config(self.data_format))

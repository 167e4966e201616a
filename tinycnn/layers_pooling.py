"""Keras' global max pooling (GlobalAveragePooling2D lives in tinycnn/layers.py).

    GlobalMaxPooling2D    (N, C, H, W) -> (N, C): the largest value of each channel (Keras: (N, H, W, C) -> (N, C))

The engine's max reduction gives the gradient (to the maxima, split between ties).
"""
from .layers import Layer, _require_rank


class GlobalMaxPooling2D(Layer):
    def build(self, shape):
        _require_rank(shape, 4, self)

    def forward(self, x):
        return x.max(axis=(2, 3))

"""Preprocessing layers, as Keras': Rescaling and RandomFlip, so that a model can take raw pixels.

    Rescaling(scale, offset=0.0)   y = x · scale + offset          (1/255 maps uint8 pixels to [0, 1])
    RandomFlip(mode)               in training, each image flipped left-right ("horizontal"), top-bottom
                                   ("vertical") or each independently ("horizontal_and_vertical"), each with
                                   probability 1/2; at inference, the identity (as Keras)

The flip is y = x + mask · (flip(x) − x) with a 0/1 mask per sample, from the engine's slicing ops, so the
gradient flows through it. Random draws come from tinycnn's generator (tinycnn.manual_seed).
"""
import numpy as np

from .layers import Layer, _require_rank
from .random import generator
from .tensor import Tensor

_FLIPS = {"horizontal": (False, True), "vertical": (True, False), "horizontal_and_vertical": (True, True)}


class Rescaling(Layer):
    def __init__(self, scale, offset=0.0, name=None, input_shape=None):
        super().__init__(name, input_shape)
        self.scale, self.offset = float(scale), float(offset)

    def forward(self, x):
        y = x * self.scale
        return y + self.offset if self.offset else y

    def config(self):
        return dict(super().config(), scale=self.scale, offset=self.offset)


class RandomFlip(Layer):
    def __init__(self, mode="horizontal_and_vertical", seed=None, name=None, input_shape=None):
        super().__init__(name, input_shape)
        if mode not in _FLIPS:
            raise ValueError(f"RandomFlip: mode must be one of {sorted(_FLIPS)}, got {mode!r}")
        self.mode, self.seed = mode, seed
        self._rng = np.random.default_rng(seed) if seed is not None else None

    def build(self, shape):
        _require_rank(shape, 4, self)

    def forward(self, x):
        if not self.training:
            return x
        rng = self._rng or generator()
        vertical, horizontal = _FLIPS[self.mode]
        if vertical:
            x = _flip_some(x, x[:, :, ::-1, :], rng)
        if horizontal:
            x = _flip_some(x, x[:, :, :, ::-1], rng)
        return x

    def config(self):
        return dict(super().config(), mode=self.mode, seed=self.seed)


def _flip_some(x, flipped, rng):
    """x with a random half of its samples (each with probability 1/2) replaced by `flipped`."""
    mask = (rng.random(x.shape[0]) < 0.5).astype(x.dtype).reshape(-1, 1, 1, 1)
    return x + Tensor(mask, device=x.device) * (flipped - x)

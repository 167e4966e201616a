"""Sequential: a stack of layers, as in the tutorial.

    model = Sequential([
        layers.Conv2D(64, 3, activation="relu", input_shape=(100, 100, 1)),
        layers.MaxPooling2D(2), ...])

It takes channels-last arrays (N, H, W, C) in fit/evaluate/predict, like Keras, and runs NCHW inside.
"""
import numpy as np

from .fuse import training_steps
from .keras_tensor import wants_channels_last
from .model import Model
from .nn import Module
from .saving import load_model  # noqa: F401  (tinycnn.models.load_model, as Keras has it)
from .tensor import Tensor, no_grad


class Sequential(Model):
    input_format = "channels_last"
    sequence = "layers"  # fuse.py fuses neighbouring layers for inference (conv + batch norm, conv + pool)

    def __init__(self, layers=None, name="sequential"):
        super().__init__(name)
        self.layers = []
        object.__setattr__(self, "_steps", [])
        self.build_input_shape = None
        for layer in layers or []:
            self.add(layer)

    def add(self, layer):
        if not isinstance(layer, Module):
            raise TypeError(f"Sequential.add expects a layer, got {type(layer).__name__}")
        if wants_channels_last(layer):
            raise ValueError(f"Sequential runs NCHW inside (it transposes the (N, H, W, C) arrays it is given): "
                             f"layer '{getattr(layer, 'name', type(layer).__name__)}' has a channels-last "
                             f"data_format or axis; leave it at its default here, or use it in a tinycnn.Module")
        if not self.layers and getattr(layer, "input_shape", None) is not None:
            shape = tuple(layer.input_shape)
            if len(shape) == 3:  # Keras (H, W, C) -> NCHW (C, H, W)
                shape = (shape[2], shape[0], shape[1])
            self.build_input_shape = shape
        self.layers = self.layers + [layer]  # re-assign so that __setattr__ registers it
        object.__setattr__(self, "_steps", training_steps(self.layers))  # not registered: the layers are
        self._weights_built = False

    def forward(self, x):
        for step in self._steps:  # the layers, batch norm + ReLU as one op (fuse.training_steps)
            x = step(x)
        return x

    def get_config(self):
        return {"name": self.name,
                "layers": [{"class": type(layer).__name__, "config": layer.get_config()} for layer in self.layers]}

    @classmethod
    def from_config(cls, config):
        from . import layers as layer_module
        built = []
        for spec in config["layers"]:
            layer_class = getattr(layer_module, spec["class"], None)
            if layer_class is None or not isinstance(layer_class, type):
                raise ValueError(f"unknown layer class {spec['class']!r} in the model file")
            built.append(layer_class(**spec["config"]))
        return cls(built, name=config.get("name", "sequential"))

    def summary(self, print_fn=print):
        """Print each layer's output shape (channels-last, as Keras shows it) and parameter count."""
        if self.build_input_shape is None:
            raise ValueError("summary() needs the input shape: give input_shape to the first layer, or fit first")
        self._ensure_built()
        rows, x = [], Tensor(np.zeros((1,) + tuple(self.build_input_shape), np.float32), device=self.device)
        was_training = self.training
        self.eval()
        with no_grad():
            for layer in self.layers:
                x = layer(x)
                shape = x.shape[1:]
                shape = (shape[1], shape[2], shape[0]) if len(shape) == 3 else shape
                params = sum(p.size for p in layer.parameters())
                rows.append((f"{layer.name} ({type(layer).__name__})", str((None,) + tuple(shape)), params))
        self.train(was_training)
        width = max(len(r[0]) for r in rows) + 2
        line = "_" * (width + 40)
        print_fn(f'Model: "{self.name}"')
        print_fn(line)
        print_fn(f"{'Layer (type)':<{width}}{'Output Shape':<28}{'Param #':>12}")
        print_fn("=" * (width + 40))
        for name, shape, params in rows:
            print_fn(f"{name:<{width}}{shape:<28}{params:>12,}")
        print_fn("=" * (width + 40))
        print_fn(f"Total params: {self.count_params():,}")
        print_fn(line)

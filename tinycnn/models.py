"""Sequential: a stack of layers, as in the tutorial.

    model = Sequential([
        layers.Conv2D(64, 3, activation="relu", input_shape=(100, 100, 1)),
        layers.MaxPooling2D(2), ...])

It takes channels-last arrays (N, H, W, C) in fit/evaluate/predict, like Keras, and runs NCHW inside.
"""
import numpy as np

from .nn import Module
from .tensor import Tensor, is_grad_enabled, no_grad


class Sequential(Module):
    input_format = "channels_last"

    def __init__(self, layers=None, name="sequential"):
        super().__init__()
        self.name = name
        self.layers = []
        self.build_input_shape = None
        for layer in layers or []:
            self.add(layer)

    def add(self, layer):
        if not isinstance(layer, Module):
            raise TypeError(f"Sequential.add expects a layer, got {type(layer).__name__}")
        if getattr(layer, "data_format", "channels_first") != "channels_first" or getattr(layer, "axis", 1) != 1:
            raise ValueError(f"Sequential runs NCHW inside (it transposes the (N, H, W, C) arrays it is given): "
                             f"layer '{getattr(layer, 'name', type(layer).__name__)}' has a channels-last "
                             f"data_format or axis; leave it at its default here, or use it in a tinycnn.Module")
        if not self.layers and getattr(layer, "input_shape", None) is not None:
            shape = tuple(layer.input_shape)
            if len(shape) == 3:  # Keras (H, W, C) -> NCHW (C, H, W)
                shape = (shape[2], shape[0], shape[1])
            self.build_input_shape = shape
        self.layers = self.layers + [layer]  # re-assign so that __setattr__ registers it
        self._weights_built = False

    def forward(self, x):
        layers, i = self.layers, 0
        while i < len(layers):
            layer = layers[i]
            if i + 1 < len(layers) and not is_grad_enabled() and getattr(layer, "pools_into", None) \
                    and layer.pools_into(layers[i + 1]):
                # inference: Conv2D(relu) + MaxPooling2D(2) as one op, the conv's full-size output never
                # written (the tutorial's net: 8 % faster predict); with gradients, the two layers as usual
                x, i = layer(x, layer.forward_pooled), i + 2
            elif i + 1 < len(layers) and getattr(layer, "folds", None) and layer.folds(layers[i + 1]):
                # inference: Conv2D + BatchNormalization (+ ReLU) as one conv, the batch norm folded into the
                # conv's weights and bias (layers.Conv2D.forward_folded)
                bn, after = layers[i + 1], layers[i + 2] if i + 2 < len(layers) else None
                act = bn.activation_after(after) if after is not None else None
                x = layer(x, lambda x: layer.forward_folded(x, bn, act))
                i += 3 if act else 2
            elif i + 1 < len(layers) and getattr(layer, "activation_after", None) \
                    and layer.activation_after(layers[i + 1]):
                # BatchNormalization + ReLU as one op (training too: the fused op has its backward)
                act = layer.activation_after(layers[i + 1])
                x, i = layer(x, lambda x: layer.forward(x, act)), i + 2
            else:
                x, i = layer(x), i + 1
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

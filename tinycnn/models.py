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
from .registry import CLASSES, from_config, layer_class
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
        """Append a layer (a Layer, a Module of one's own, or a whole model)."""
        if not isinstance(layer, Module):
            raise TypeError(f"Sequential.add expects a layer, got {type(layer).__name__}")
        inner = _channels_last_inside(layer)
        if inner is not None:
            where = "" if inner is layer else f" (inside '{_name(layer)}')"
            raise ValueError(f"Sequential runs NCHW inside (it transposes the (N, H, W, C) arrays it is given): "
                             f"layer '{_name(inner)}'{where} has a channels-last data_format or axis; leave it at "
                             "its default here, or build the network as a tinycnn.Model")
        if not self.layers and getattr(layer, "input_shape", None) is not None:
            shape = tuple(layer.input_shape)
            if len(shape) == 3:  # Keras (H, W, C) -> NCHW (C, H, W)
                shape = (shape[2], shape[0], shape[1])
            self.build_input_shape = shape
        self._set_layers(self.layers + [layer])

    def pop(self):
        """Remove the last layer (and return it), as Keras' Sequential.pop."""
        if not self.layers:
            raise IndexError("Sequential.pop: the model has no layer")
        last = self.layers[-1]
        self._set_layers(self.layers[:-1])
        if not self.layers:
            self.build_input_shape = None
        return last

    def _set_layers(self, layers):
        for index in range(len(self.layers)):
            self._modules.pop(f"layers.{index}", None)
        self.layers = layers  # assigned, so that __setattr__ registers each as "layers.<i>"
        object.__setattr__(self, "_steps", training_steps(self.layers))  # not registered: the layers are
        self._weights_built = False

    @property
    def builds_through_inference_form(self):
        """Whether predict may build this model by a forward of its inference form (Trainer._ensure_built): only
        when every layer is a plain layer, which the form shares as it is (a layer with sub-modules is copied
        into the form, and weights it built there would not be the model's)."""
        return all(not layer._modules for layer in self.layers)

    def forward(self, x):
        for step in self._steps:  # the layers, batch norm + ReLU as one op (fuse.training_steps)
            x = step(x)
        return x

    def get_config(self):
        return {"name": self.name, "layers": [_layer_spec(layer) for layer in self.layers]}

    @classmethod
    def from_config(cls, config):
        """Layers by their registered class (tinycnn's, a user's Module or layer, a nested model)."""
        built = [from_config(layer_class(spec), spec["config"]) for spec in config["layers"]]
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
                rows.append((f"{_name(layer)} ({type(layer).__name__})", str((None,) + tuple(shape)), params))
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


def _layer_spec(layer):
    name, module = CLASSES.describe(type(layer))
    return {"class": name, "module": module, "config": layer.get_config()}


def _name(layer):
    return getattr(layer, "name", None) or type(layer).__name__


def _channels_last_inside(layer):
    """The first layer in `layer` (itself, or one of its sub-modules) that takes channels-last maps; None if
    none does. A whole model is not looked into: it arranges its own layouts."""
    if isinstance(layer, Model):
        return None
    if wants_channels_last(layer):
        return layer
    for module in layer._modules.values():
        found = _channels_last_inside(module)
        if found is not None:
            return found
    return None

"""The sources of a functional graph: `Input(shape)` and its InputLayer (tinycnn/functional_model.py)."""
from .keras_layout import tensor_shape
from .keras_tensor import KerasTensor, Node
from .layers import Layer


class InputLayer(Layer):
    """The source of a graph: holds the per-sample shape (Keras' channels-last) and makes its KerasTensor."""

    def __init__(self, shape=None, name=None, input_shape=None, batch_size=None, dtype=None):
        shape = shape if shape is not None else input_shape
        if shape is None:
            raise ValueError("Input needs a shape, e.g. Input((64, 64, 3)) (the batch axis left out)")
        super().__init__(name)
        self.shape = tuple(int(s) for s in shape)
        if any(s is None for s in shape) or any(s < 1 for s in self.shape):
            raise ValueError(f"Input shape {shape}: every axis needs a fixed positive size here")
        self.built = True
        node = Node(self, None)
        node.outputs = [KerasTensor(tensor_shape(self.shape), node)]
        self.output = node.outputs[0]

    def forward(self, x):
        return x

    def config(self):
        return {"name": self.name, "shape": list(self.shape)}


def Input(shape=None, name=None, batch_size=None, dtype=None):  # noqa: N802  (Keras' name)
    """A symbolic batch of inputs of per-sample shape `shape` (channels last for images: (H, W, C))."""
    return InputLayer(shape, name=name, batch_size=batch_size, dtype=dtype).output

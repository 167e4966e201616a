"""Merge layers: several tensors in, one out, as Keras' (called on a list: `Add()([a, b])`).

    Add, Subtract, Multiply, Average, Maximum, Minimum   element by element; the inputs' shapes must match
    Concatenate(axis=-1)                                  joined along Keras' `axis` (channels by default)

and the functions `add`, `subtract`, `multiply`, `average`, `maximum`, `minimum`, `concatenate(inputs, axis)`.
Axes are Keras' channels-last axes; image maps are NCHW inside, so `axis=-1` joins along the tensor's axis 1
(tinycnn/keras_layout.py). Gradients come from the engine's ops (add, mul, cat, max).
"""
from .keras_layout import tensor_axis
from .keras_tensor import call_symbolic, is_symbolic
from .layers import Layer
from .ops.basic import cat
from .tensor import Tensor


class _Merge(Layer):
    """A layer called on a list of at least two tensors."""

    def __call__(self, inputs):
        if is_symbolic(inputs):
            return call_symbolic(self, inputs)
        if not isinstance(inputs, (list, tuple)) or len(inputs) < 2:
            raise ValueError(f"layer '{self.name}' ({type(self).__name__}) must be called on a list of at least "
                             f"2 tensors, got {type(inputs).__name__}")
        tensors = [t if isinstance(t, Tensor) else Tensor(t) for t in inputs]
        shapes = [t.shape for t in tensors]
        with self.errors_named(shapes):
            if not self.built:
                self.build(shapes)
                self.built = True
            return self.forward(tensors)


class _ElementwiseMerge(_Merge):
    def build(self, shapes):
        if any(s != shapes[0] for s in shapes[1:]):
            raise ValueError(f"{type(self).__name__} needs inputs of one shape, got {shapes}")

    def forward(self, tensors):
        result = tensors[0]
        for t in tensors[1:]:
            result = self.combine(result, t)
        return result


class Add(_ElementwiseMerge):
    def combine(self, a, b):
        return a + b


class Multiply(_ElementwiseMerge):
    def combine(self, a, b):
        return a * b


class Maximum(_ElementwiseMerge):
    def combine(self, a, b):  # max(a, b) = b + relu(a − b): the engine's relu gives the gradient
        from .ops.activation import relu
        return b + relu(a - b)


class Minimum(_ElementwiseMerge):
    def combine(self, a, b):  # min(a, b) = a − relu(a − b)
        from .ops.activation import relu
        return a - relu(a - b)


class Average(_ElementwiseMerge):
    def forward(self, tensors):
        total = tensors[0]
        for t in tensors[1:]:
            total = total + t
        return total * (1.0 / len(tensors))


class Subtract(_ElementwiseMerge):
    def build(self, shapes):
        if len(shapes) != 2:
            raise ValueError(f"Subtract takes exactly 2 inputs, got {len(shapes)}")
        super().build(shapes)

    def combine(self, a, b):
        return a - b


class Concatenate(_Merge):
    """Joins along Keras' `axis` (default -1: the channels of an image map, the features of a vector)."""

    def __init__(self, axis=-1, name=None, input_shape=None):
        super().__init__(name, input_shape)
        self.axis = int(axis)

    def build(self, shapes):
        ndim = len(shapes[0])
        if any(len(s) != ndim for s in shapes):
            raise ValueError(f"Concatenate needs inputs of one rank, got shapes {shapes}")
        axis = tensor_axis(self.axis, ndim)
        if any(s[:axis] + s[axis + 1:] != shapes[0][:axis] + shapes[0][axis + 1:] for s in shapes):
            raise ValueError(f"Concatenate(axis={self.axis}) needs inputs that match except along that axis, "
                             f"got {shapes} (NCHW inside)")

    def forward(self, tensors):
        return cat(tensors, axis=tensor_axis(self.axis, tensors[0].ndim))

    def config(self):
        return dict(super().config(), axis=self.axis)


def _function_of(layer_class):
    """keras.layers.add & co.: `add(inputs, **kwargs)` is `Add(**kwargs)(inputs)`."""
    def merge(inputs, **kwargs):
        return layer_class(**kwargs)(inputs)
    merge.__name__ = merge.__qualname__ = layer_class.__name__.lower()
    merge.__doc__ = f"{layer_class.__name__}(**kwargs)(inputs)"
    return merge


add, subtract, multiply, average, maximum, minimum = (
    _function_of(c) for c in (Add, Subtract, Multiply, Average, Maximum, Minimum))


def concatenate(inputs, axis=-1, **kwargs):
    return Concatenate(axis=axis, **kwargs)(inputs)

"""Activations, as torch.nn.functional: each forward with its derivative beside it.

    relu(x) = max(x, 0)                  relu'(x) = [x > 0]
    relu6(x) = min(max(x, 0), 6)         relu6'(x) = [0 < x < 6]
    leaky_relu(x) = x if x > 0 else a·x  leaky_relu'(x) = 1 if x > 0 else a
    sigmoid(x) = 1 / (1 + e⁻ˣ)           sigmoid' = y (1 − y)
    tanh(x)                              tanh' = 1 − y²
"""
import numbers

from ..tensor import Function, Tensor


class ReLU(Function):
    def forward(self, x):
        self.x = x
        return self.k.activation.relu_forward(x)

    def backward(self, dy):
        return self.k.activation.relu_backward(dy, self.x)


class ReLU6(Function):
    def forward(self, x):
        self.x = x
        return self.k.activation.relu6_forward(x)

    def backward(self, dy):
        return self.k.activation.relu6_backward(dy, self.x)


class LeakyReLU(Function):
    def forward(self, x, slope):
        self.x, self.slope = x, slope
        return self.k.activation.leaky_relu_forward(x, slope)

    def backward(self, dy):
        return self.k.activation.leaky_relu_backward(dy, self.x, self.slope)


class Sigmoid(Function):
    """Keeps its input as `x`: a loss may fuse sigmoid + binary cross-entropy by reading the logits
    (`out._ctx.inputs[0]` when `out._ctx` is a Sigmoid)."""

    def forward(self, x):
        self.x = x
        self.y = self.k.activation.sigmoid_forward(x)
        return self.y

    def backward(self, dy):
        return self.k.activation.sigmoid_backward(dy, self.y)


class Tanh(Function):
    def forward(self, x):
        self.y = self.k.activation.tanh_forward(x)
        return self.y

    def backward(self, dy):
        return self.k.activation.tanh_backward(dy, self.y)


def _check(input, op):
    if not isinstance(input, Tensor):
        raise TypeError(f"{op} expects a Tensor, got {type(input).__name__}")
    if input.dtype.kind != "f":
        raise TypeError(f"{op} expects a float tensor, got {input.dtype} (shape {input.shape})")


def relu(input):
    _check(input, "relu")
    return ReLU.apply(input)


def relu6(input):
    _check(input, "relu6")
    return ReLU6.apply(input)


def leaky_relu(input, negative_slope=0.01):
    _check(input, "leaky_relu")
    if not isinstance(negative_slope, numbers.Real) or isinstance(negative_slope, bool):
        raise TypeError(f"leaky_relu: negative_slope must be a number, got {negative_slope!r}")
    return LeakyReLU.apply(input, float(negative_slope))


def sigmoid(input):
    _check(input, "sigmoid")
    return Sigmoid.apply(input)


def tanh(input):
    _check(input, "tanh")
    return Tanh.apply(input)

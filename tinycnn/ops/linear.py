"""The dense layer: y = x Wᵀ + b (x (N, I), W (O, I), b (O,)); backward dx = dy W, dW = dyᵀ x, db = Σ dy."""
from ..tensor import Function, Tensor


class Linear(Function):
    def forward(self, x, w, b=None):
        self.x, self.w, self.has_bias = x, w, b is not None
        return self.k.linear.linear_forward(x, w, b)

    def backward(self, dy):
        need = self.needs_grad + (False,) * (3 - len(self.needs_grad))
        dx, dw, db = self.k.linear.linear_backward(dy, self.x, self.w, need[0], need[1], need[2])
        return (dx, dw, db) if self.has_bias else (dx, dw)


def linear(input, weight, bias=None):
    """y = input @ weightᵀ + bias, as torch.nn.functional.linear (input (N, I), weight (O, I))."""
    if input.ndim != 2:
        raise ValueError(f"linear expects a 2-D input (N, features), got shape {input.shape}")
    if weight.ndim != 2 or input.shape[1] != weight.shape[1]:
        raise ValueError(f"linear: input has {input.shape[1]} features but weight has shape {weight.shape}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"linear: bias shape {bias.shape} does not match {weight.shape[0]} outputs")
    args = (input, weight) if bias is None else (input, weight, bias)
    return Linear.apply(*args)

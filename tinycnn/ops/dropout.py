"""Inverted dropout, as torch.nn.functional.dropout: during training each element is zeroed with
probability p and the survivors are scaled by 1/(1 − p), so that E[y] = x and evaluation is the identity.

    y = x · mask,  mask = [u ≥ p] / (1 − p);   dx = dy · mask
"""
import numbers

from ..random import next_seed
from ..tensor import Function, Tensor


class Dropout(Function):
    replayable = False  # a new seed per call: an inference plan (tinycnn/plan.py) must not repeat one mask

    def forward(self, x, p, seed):
        y, self.mask = self.k.dropout.dropout_forward(x, p, seed)
        return y

    def backward(self, dy):
        return self.k.dropout.dropout_backward(dy, self.mask)


def dropout(input, p=0.5, training=True):
    """Zero each element with probability p (training only); p = 1 gives zeros, p = 0 the input itself.

    The mask's random numbers come from a seed drawn from tinycnn's generator: tinycnn.manual_seed(s)
    makes the masks of a run repeatable.
    """
    if not isinstance(input, Tensor):
        raise TypeError(f"dropout expects a Tensor, got {type(input).__name__}")
    if input.dtype.kind != "f":
        raise TypeError(f"dropout expects a float tensor, got {input.dtype} (shape {input.shape})")
    if not isinstance(p, numbers.Real) or isinstance(p, bool) or not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p!r}")
    if not training or p == 0:
        return input
    return Dropout.apply(input, float(p), next_seed())

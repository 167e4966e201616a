"""Losses, as torch.nn.functional: each returns a 0-d tensor, the mean (or sum) over the batch.

    binary_cross_entropy_with_logits   l = −w [pw · t log σ(z) + (1 − t) log(1 − σ(z))]   (stable for any z)
    binary_cross_entropy               l = −w [t log p + (1 − t) log(1 − p)],  p clipped to [1e-7, 1 − 1e-7]
    cross_entropy                      l = −w[t] log softmax(x)[t]  over the classes (axis 1), per sample or pixel
    mse_loss                           l = (p − t)²

reduction="mean" averages over the elements (cross_entropy: Σ w[t] l / Σ w[t] over the pixels not ignored,
PyTorch's weighted mean), reduction="sum" adds them up. The kernels compute the mean; a sum is the mean
times the count. Targets (Tensors or NumPy arrays) are constants: no gradient flows into them.
"""
import numpy as np

from ..tensor import Function, Tensor

BCE_EPS = 1e-7  # probabilities are clipped to [BCE_EPS, 1 − BCE_EPS] so that log stays finite (as Keras)


def _host_float(k, value):
    """A loss value or upstream gradient (Python number, 0-d array, device array) -> Python float."""
    return float(value) if isinstance(value, (int, float)) else float(k.elementwise.to_numpy(value))


def _loss_array(k, value, dtype):
    return k.elementwise.full((), value, dtype)


def _weight_kwargs(weight):
    """Only pass `weight` to a BCE kernel when there is one."""
    return {} if weight is None else {"weight": weight}


class BCEWithLogits(Function):
    replayable = False  # its target is one batch's (tinycnn/plan.py)

    def forward(self, z, *, target, pos_weight, weight, reduction):
        self.z, self.t, self.pos_weight, self.weight = z, target, pos_weight, weight
        self.factor = z.size if reduction == "sum" else 1
        loss = self.k.loss.bce_with_logits_forward(z, target, pos_weight, **_weight_kwargs(weight))
        return _loss_array(self.k, _host_float(self.k, loss) * self.factor, z.dtype)

    def backward(self, g):
        g = _host_float(self.k, g) * self.factor
        return self.k.loss.bce_with_logits_backward(self.z, self.t, self.pos_weight, g, **_weight_kwargs(self.weight))


class BCE(Function):
    replayable = False  # its target is one batch's (tinycnn/plan.py)

    def forward(self, p, *, target, weight, reduction):
        self.p, self.t, self.weight = p, target, weight
        self.factor = p.size if reduction == "sum" else 1
        loss = self.k.loss.bce_forward(p, target, BCE_EPS, **_weight_kwargs(weight))
        return _loss_array(self.k, _host_float(self.k, loss) * self.factor, p.dtype)

    def backward(self, g):
        g = _host_float(self.k, g) * self.factor
        return self.k.loss.bce_backward(self.p, self.t, BCE_EPS, g, **_weight_kwargs(self.weight))


class CrossEntropy(Function):
    replayable = False  # its target is one batch's (tinycnn/plan.py)

    def forward(self, x, *, target, weight, ignore_index, reduction):
        e = self.k.elementwise
        N, C = x.shape[0], x.shape[1]
        inner = x.size // (N * C) if N * C else 0
        self.shape, self.weight, self.ignore_index = x.shape, weight, ignore_index
        self.t2 = e.reshape(target, (N, inner))
        loss, self.log_probs3, weight_sum = self.k.loss.cross_entropy_forward(
            e.reshape(x, (N, C, inner)), self.t2, weight, ignore_index)
        self.weight_sum = _host_float(self.k, weight_sum)
        self.factor = self.weight_sum if reduction == "sum" else 1.0
        value = _host_float(self.k, loss)
        if reduction == "sum":  # Σ w[t] l = mean · Σ w[t]; nothing counted sums to 0 (the mean is NaN)
            value = value * self.weight_sum if self.weight_sum != 0 else 0.0
        return _loss_array(self.k, value, x.dtype)

    def backward(self, g):
        g = _host_float(self.k, g) * self.factor
        dx3 = self.k.loss.cross_entropy_backward(self.log_probs3, self.t2, self.weight, self.ignore_index,
                                                 self.weight_sum, g)
        return self.k.elementwise.reshape(dx3, self.shape)


class MSE(Function):
    replayable = False  # its target is one batch's (tinycnn/plan.py)

    def forward(self, p, *, target, reduction):
        self.p, self.t = p, target
        self.factor = p.size if reduction == "sum" else 1
        loss = self.k.loss.mse_forward(p, target)
        return _loss_array(self.k, _host_float(self.k, loss) * self.factor, p.dtype)

    def backward(self, g):
        return self.k.loss.mse_backward(self.p, self.t, _host_float(self.k, g) * self.factor)


# ---------------------------------------------------------------------- argument checks

def _check_input(input, op):
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}: input must be a Tensor, got {type(input).__name__}")
    if input.dtype.kind != "f":
        raise TypeError(f"{op} expects a float input, got {input.dtype}")
    if input.size == 0:
        raise ValueError(f"{op}: empty input of shape {input.shape}")


def _check_reduction(reduction, op):
    if reduction == "none":
        raise NotImplementedError(f"{op}: reduction='none' is not supported; use 'mean' or 'sum'")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"{op}: reduction must be 'mean' or 'sum', got {reduction!r}")


def _constant(value, like, op, name):
    """A target or weight (Tensor, NumPy array, number) -> an array on like's device in like's dtype."""
    if isinstance(value, Tensor):
        if value.device != like.device:
            raise RuntimeError(f"{op}: {name} is on {value.device} but the input is on {like.device}")
        return value.data if value.dtype == like.dtype else value.astype(like.dtype).data
    array = np.asarray(value)
    if array.dtype.kind not in "fiub":
        raise TypeError(f"{op}: {name} must be numeric, got an array of dtype {array.dtype}")
    return Tensor(array, dtype=like.dtype, device=like.device).data


def _same_shape_target(input, target, op):
    target = _constant(target, input, op, "target")
    if tuple(target.shape) != input.shape:
        raise ValueError(f"{op}: target shape {tuple(target.shape)} does not match input shape {input.shape}")
    return target


def _broadcast_weight(weight, input, op, name):
    if weight is None:
        return None
    weight = _constant(weight, input, op, name)
    try:
        fits = np.broadcast_shapes(tuple(weight.shape), input.shape) == input.shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"{op}: {name} of shape {tuple(weight.shape)} does not broadcast to input shape {input.shape}")
    return weight


# ---------------------------------------------------------------------- public functions

def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean", pos_weight=None):
    """BCE on logits z (any shape), targets t in [0, 1] of the same shape; weight and pos_weight broadcast to
    the input (pos_weight weights the positive term: pass (C,) for an (N, C) input). Stable for any |z|."""
    op = "binary_cross_entropy_with_logits"
    _check_input(input, op)
    _check_reduction(reduction, op)
    target = _same_shape_target(input, target, op)
    return BCEWithLogits.apply(input, target=target, reduction=reduction,
                               weight=_broadcast_weight(weight, input, op, "weight"),
                               pos_weight=_broadcast_weight(pos_weight, input, op, "pos_weight"))


def binary_cross_entropy(input, target, weight=None, reduction="mean"):
    """BCE on probabilities p (any shape), clipped to [1e-7, 1 − 1e-7] (no gradient where clipped)."""
    op = "binary_cross_entropy"
    _check_input(input, op)
    _check_reduction(reduction, op)
    target = _same_shape_target(input, target, op)
    return BCE.apply(input, target=target, weight=_broadcast_weight(weight, input, op, "weight"),
                     reduction=reduction)


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """Softmax cross-entropy with class indices: input (N, C) logits with target (N,), or per pixel
    input (N, C, H, W) with target (N, H, W). weight (C,) weighs each class; pixels whose target is
    ignore_index count for nothing (not even in the mean's denominator)."""
    op = "cross_entropy"
    _check_input(input, op)
    _check_reduction(reduction, op)
    if input.ndim < 2:
        raise ValueError(f"{op} expects input (N, C) or (N, C, H, W), got shape {input.shape}")
    C = input.shape[1]
    target = _class_targets(target, input, int(ignore_index), op)
    if weight is not None:
        weight = _constant(weight, input, op, "weight")
        if tuple(weight.shape) != (C,):
            raise ValueError(f"{op}: weight has shape {tuple(weight.shape)}, expected ({C},) for input {input.shape}")
    return CrossEntropy.apply(input, target=target, weight=weight, ignore_index=int(ignore_index),
                              reduction=reduction)


def _class_targets(target, input, ignore_index, op):
    """Class indices -> an int64 array on the input's device, checked on the host: shape (N, *spatial),
    every value in [0, C) or ignore_index."""
    host = target.numpy() if isinstance(target, Tensor) else np.asarray(target)
    if host.dtype.kind == "f":
        if not np.all(host == np.round(host)):
            raise TypeError(f"{op}: target must hold class indices (integers), got non-integer floats")
    elif host.dtype.kind not in "iu":
        raise TypeError(f"{op}: target must hold class indices (integers), got dtype {host.dtype}")
    expected = (input.shape[0],) + input.shape[2:]
    if host.shape != expected:
        raise ValueError(f"{op}: target shape {host.shape} does not match input shape {input.shape} "
                         f"(expected target shape {expected})")
    host = host.astype(np.int64)
    C = input.shape[1]
    bad = ((host < 0) | (host >= C)) & (host != ignore_index)
    if bad.any():
        raise ValueError(f"{op}: target value {int(host[bad][0])} is out of range for {C} classes "
                         f"(expected 0 ≤ target < {C}, or ignore_index={ignore_index})")
    if isinstance(target, Tensor) and target.dtype == np.int64 and target.device == input.device:
        return target.data
    return Tensor(host, device=input.device).data


def mse_loss(input, target, reduction="mean"):
    """Mean (or sum) of (input − target)²; target of the same shape."""
    op = "mse_loss"
    _check_input(input, op)
    _check_reduction(reduction, op)
    return MSE.apply(input, target=_same_shape_target(input, target, op), reduction=reduction)

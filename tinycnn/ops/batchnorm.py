"""Batch normalisation, as torch.nn.functional.batch_norm: input (N, C) or (N, C, H, W) (or (N, C, L)).

Training mode normalises each channel with its batch mean and (biased) variance and, when running
statistics are given, blends the batch's mean and unbiased variance into them in place:

    y = γ (x − mean_B) / √(var_B + ε) + β          running ← (1 − momentum) running + momentum batch

Eval mode uses the running statistics instead, so the output is an affine function of x per channel.
The kernels see x as (N, C, inner), inner = H·W (or 1): one kernel serves every rank.
"""
from ..tensor import Function, Tensor


class BatchNorm(Function):
    """Inputs (x, weight, bias, running_mean, running_var), any but x may be None; only x, weight, bias get gradients."""

    def forward(self, x, weight, bias, running_mean, running_var, *, training, momentum, eps):
        e, bn = self.k.elementwise, self.k.batchnorm
        self.present = [i for i, a in enumerate((x, weight, bias, running_mean, running_var)) if a is not None]
        self.shape, self.training = x.shape, training
        N, C = x.shape[0], x.shape[1]
        x3 = e.reshape(x, (N, C, _inner_size(x.shape)))
        self.gamma = weight if weight is not None else e.ones((C,), x.dtype)
        beta = bias if bias is not None else e.zeros((C,), x.dtype)
        if training:
            y3, self.mean, self.invstd, var_unbiased = bn.batch_norm_train_forward(x3, self.gamma, beta, eps)
            if running_mean is not None:
                bn.update_running(running_mean, self.mean, momentum)
            if running_var is not None:
                bn.update_running(running_var, var_unbiased, momentum)
        else:
            y3 = bn.batch_norm_eval_forward(x3, self.gamma, beta, running_mean, running_var, eps)
            self.mean = running_mean
            self.invstd = e.div(1.0, e.sqrt(e.add(running_var, eps)))
        self.x3 = x3
        return e.reshape(y3, self.shape)

    def backward(self, dy):
        e = self.k.elementwise
        needs = dict(zip(self.present, self.needs_grad))
        need_dx, need_dgamma, need_dbeta = needs.get(0, False), needs.get(1, False), needs.get(2, False)
        dy3 = e.reshape(dy, self.x3.shape)
        # In eval mode mean and invstd are constants: dγ and dβ have the training formulas, but dx is only
        # the per-channel scale γ · invstd (there is no path through the batch statistics).
        dx3 = dgamma = dbeta = None
        if (need_dx and self.training) or need_dgamma or need_dbeta:
            dx3, dgamma, dbeta = self.k.batchnorm.batch_norm_backward(
                dy3, self.x3, self.gamma, self.mean, self.invstd, need_dx and self.training, need_dgamma, need_dbeta)
        if need_dx and not self.training:
            scale = e.reshape(e.mul(self.gamma, self.invstd), (1, self.gamma.shape[0], 1))
            dx3 = e.mul(dy3, scale)
        grads = {0: None if dx3 is None else e.reshape(dx3, self.shape), 1: dgamma, 2: dbeta}
        return tuple(grads.get(i) for i in self.present)


def _inner_size(shape):
    inner = 1
    for s in shape[2:]:
        inner *= s
    return inner


def _check_channel_vector(t, name, C, x):
    if t is None:
        return
    if not isinstance(t, Tensor):
        raise TypeError(f"batch_norm: {name} must be a Tensor or None, got {type(t).__name__}")
    if t.shape != (C,):
        raise ValueError(f"batch_norm: {name} has shape {t.shape}, expected ({C},) for input of shape {x.shape}")
    if t.dtype != x.dtype:
        raise TypeError(f"batch_norm: {name} is {t.dtype} but the input is {x.dtype}")


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """torch.nn.functional.batch_norm. input (N, C) or (N, C, H, W); running_mean/var (C,) Tensors or None
    (updated in place on .data when training); weight γ and bias β (C,) or None (γ = 1, β = 0)."""
    if not isinstance(input, Tensor):
        raise TypeError(f"batch_norm: input must be a Tensor, got {type(input).__name__}")
    if input.ndim not in (2, 3, 4):
        raise ValueError(f"batch_norm expects an input of shape (N, C), (N, C, L) or (N, C, H, W), got {input.shape}")
    if input.dtype.kind != "f":
        raise TypeError(f"batch_norm expects a float input, got {input.dtype}")
    C = input.shape[1]
    for t, name in ((running_mean, "running_mean"), (running_var, "running_var"), (weight, "weight"), (bias, "bias")):
        _check_channel_vector(t, name, C, input)
    if not isinstance(momentum, (int, float)) or not 0 <= momentum <= 1:
        raise ValueError(f"batch_norm: momentum must be a number in [0, 1], got {momentum!r}")
    if training:
        count = input.size // C if C else 0
        if count <= 1:
            raise ValueError(f"batch_norm: expected more than 1 value per channel when training, "
                             f"got input of shape {input.shape}")
    elif running_mean is None or running_var is None:
        raise ValueError("batch_norm: eval mode (training=False) needs running_mean and running_var")
    return BatchNorm.apply(input, weight, bias, running_mean, running_var,
                           training=bool(training), momentum=float(momentum), eps=float(eps))

"""Batch normalisation, as torch.nn.functional.batch_norm: input (N, C) or (N, C, H, W) (or (N, C, L)).

Training mode normalises each channel with its batch mean and (biased) variance and, when running
statistics are given, blends the batch's mean and unbiased variance into them in place:

    y = γ (x − mean_B) / √(var_B + ε) + β          running ← (1 − momentum) running + momentum batch

Eval mode uses the running statistics instead, so the output is an affine function of x per channel.
The kernels see x as (N, C, inner), inner = H·W (or 1): one kernel serves every rank.

Synchronised batch norm (data-parallel training, tinycnn/distributed.py): while the module-level hook
`sync_sums` is set, training mode normalises with the statistics of the global batch that all processes
share. The hook takes a float64 NumPy array and returns its element-wise sum over the processes; the op
calls it twice per step: in forward on the per-channel (count, Σ(x − K), Σ(x − K)²) — K the running mean,
the same on every process, a shift that keeps the variance from cancelling — and in backward on the two
per-channel sums of dx (Σ dy, Σ dy x̂). Each process's γ and β gradients stay its own share: data-parallel
training sums them with the other gradients. With `sync_sums = None` (the default) each process
normalises with its own batch's statistics.
"""
import numpy as np

from ..tensor import Function, Tensor

sync_sums = None


class BatchNorm(Function):
    """Inputs (x, weight, bias, running_mean, running_var), any but x may be None; only x, weight, bias get gradients."""

    def forward(self, x, weight, bias, running_mean, running_var, *, training, momentum, eps, activation=None):
        e, bn = self.k.elementwise, self.k.batchnorm
        self.activation = activation
        act = {} if activation is None else {"activation": activation}  # fused: see batch_norm_activation
        self.present = [i for i, a in enumerate((x, weight, bias, running_mean, running_var)) if a is not None]
        self.shape, self.training = x.shape, training
        N, C = x.shape[0], x.shape[1]
        x3 = e.reshape(x, (N, C, _inner_size(x.shape)))
        self.gamma = weight if weight is not None else e.ones((C,), x.dtype)
        beta = self.beta = bias if bias is not None else e.zeros((C,), x.dtype)
        self.synced = training and sync_sums is not None
        if training:
            if self.synced:
                y3, self.mean, self.invstd, var_unbiased = self._synced_forward(x3, beta, running_mean, eps)
            else:
                y3, self.mean, self.invstd, var_unbiased = bn.batch_norm_train_forward(x3, self.gamma, beta, eps, **act)
            if running_mean is not None:
                bn.update_running(running_mean, self.mean, momentum)
            if running_var is not None:
                bn.update_running(running_var, var_unbiased, momentum)
        else:
            y3 = bn.batch_norm_eval_forward(x3, self.gamma, beta, running_mean, running_var, eps, **act)
            self.mean = running_mean
            self.invstd = e.div(1.0, e.sqrt(e.add(running_var, eps)))
        self.x3 = x3
        self.y3 = y3 if activation is not None else None  # the activation's mask comes from its output
        return e.reshape(y3, self.shape)

    def _synced_forward(self, x3, beta, running_mean, eps):
        """Forward with the global batch's mean and variance: this process's statistics (the kernel's stable
        ones) as shifted sums, summed over the processes by `sync_sums`."""
        e, bn = self.k.elementwise, self.k.batchnorm
        N, C, inner = x3.shape
        n = N * inner
        _, mean, _, var = bn.batch_norm_train_forward(x3, self.gamma, beta, eps)  # its output is not used
        mean, var = e.to_numpy(mean).astype(np.float64), e.to_numpy(var).astype(np.float64)
        shift = np.zeros(C) if running_mean is None else e.to_numpy(running_mean).astype(np.float64)
        deviations = var * (n - 1) if n > 1 else np.zeros(C)  # Σ (x − mean)², from the unbiased variance
        local = np.stack([np.full(C, float(n)), n * (mean - shift), deviations + n * (mean - shift) ** 2])
        count, shifted_sum, shifted_squares = sync_sums(local)
        self.count = count[0]
        if self.count <= 1:
            raise ValueError(f"batch_norm: expected more than 1 value per channel over all processes, "
                             f"got {self.count:g}")
        global_mean = shift + shifted_sum / self.count
        global_var = np.maximum(shifted_squares / self.count - (shifted_sum / self.count) ** 2, 0.0)
        mean, var = e.asarray(global_mean, x3.dtype), e.asarray(global_var, x3.dtype)
        y3 = bn.batch_norm_eval_forward(x3, self.gamma, beta, mean, var, eps)  # γ (x − mean) / √(var + ε) + β
        invstd = e.asarray(1.0 / np.sqrt(global_var + eps), x3.dtype)
        return y3, mean, invstd, e.asarray(global_var * self.count / (self.count - 1), x3.dtype)

    def _synced_input_grad(self, dy3, dgamma, dbeta):
        """dx = γ invstd · (dy − Σ dy / M − x̂ Σ dy x̂ / M), the sums and the count M over every process."""
        e = self.k.elementwise
        C = self.x3.shape[1]
        sums = sync_sums(np.stack([e.to_numpy(dbeta), e.to_numpy(dgamma)]).astype(np.float64))
        mean_dy, mean_dy_xhat = (e.asarray((s / self.count).reshape(1, C, 1), self.x3.dtype) for s in sums)
        x_hat = e.mul(e.sub(self.x3, e.reshape(self.mean, (1, C, 1))), e.reshape(self.invstd, (1, C, 1)))
        dy_centred = e.sub(e.sub(dy3, mean_dy), e.mul(x_hat, mean_dy_xhat))
        return e.mul(dy_centred, e.reshape(e.mul(self.gamma, self.invstd), (1, C, 1)))

    def backward(self, dy):
        e = self.k.elementwise
        needs = dict(zip(self.present, self.needs_grad))
        need_dx, need_dgamma, need_dbeta = needs.get(0, False), needs.get(1, False), needs.get(2, False)
        dy3 = e.reshape(dy, self.x3.shape)
        fused = {}
        if self.activation is not None and self.training:  # the kernels mask dy with act' (of y3, or of γ x̂ + β)
            fused = {"y3": self.y3, "activation": self.activation, "beta": self.beta}
        elif self.activation is not None:  # eval mode: mask dy first (act' read from the output, as above)
            dy3 = getattr(self.k.activation, f"{self.activation}_backward")(dy3, self.y3)
        # In eval mode mean and invstd are constants: dγ and dβ have the training formulas, but dx is only
        # the per-channel scale γ · invstd (there is no path through the batch statistics).
        dx3 = dgamma = dbeta = None
        if self.synced:  # this process's sums (its γ, β gradients), then dx from the sums over every process
            _, dgamma, dbeta = self.k.batchnorm.batch_norm_backward(
                dy3, self.x3, self.gamma, self.mean, self.invstd, False, True, True)
            dx3 = self._synced_input_grad(dy3, dgamma, dbeta) if need_dx else None
        elif (need_dx and self.training) or need_dgamma or need_dbeta:
            dx3, dgamma, dbeta = self.k.batchnorm.batch_norm_backward(
                dy3, self.x3, self.gamma, self.mean, self.invstd, need_dx and self.training, need_dgamma, need_dbeta,
                **fused)
        if need_dx and not self.training:
            scale = e.reshape(e.mul(self.gamma, self.invstd), (1, self.gamma.shape[0], 1))
            dx3 = e.mul(dy3, scale)
        grads = {0: None if dx3 is None else e.reshape(dx3, self.shape), 1: dgamma, 2: dbeta}
        return tuple(grads.get(i) for i in self.present)


class FoldWeight(Function):
    """An eval-mode batch norm folded into the conv before it, the weights: w'[f] = w[f] · s[f],
    s = γ / √(var + ε). Backward: dw = dw' · s, ds = Σ_{c,i,j} dw' · w, dγ = ds / √(var + ε),
    dvar = −½ · ds · s / (var + ε)."""

    def forward(self, w, gamma, var, *, eps):
        e = self.k.elementwise
        self.w, self.gamma, self.root = w, gamma, e.sqrt(e.add(var, eps))
        self.scale = e.div(gamma, self.root)
        return e.mul(w, e.reshape(self.scale, (-1,) + (1,) * (w.ndim - 1)))

    def backward(self, dw_folded):
        e = self.k.elementwise
        shape = (-1,) + (1,) * (self.w.ndim - 1)
        dw = e.mul(dw_folded, e.reshape(self.scale, shape))
        dscale = self.k.reduce.sum(e.mul(dw_folded, self.w), tuple(range(1, self.w.ndim)), False)
        return (dw,) + _scale_grads(e, dscale, self.scale, self.root)


class FoldBias(Function):
    """The bias of the same fold: b' = (b − mean) · s + β (b = 0 when the conv has none). Backward:
    db = db' · s, dmean = −db' · s, dβ = db', ds = db' · (b − mean), then dγ and dvar as in FoldWeight."""

    def forward(self, b, gamma, beta, mean, var, *, eps):
        e = self.k.elementwise
        self.has_bias, self.root = b is not None, e.sqrt(e.add(var, eps))
        self.scale = e.div(gamma, self.root)
        self.centred = e.sub(b, mean) if b is not None else e.neg(mean)
        return e.add(e.mul(self.centred, self.scale), beta)

    def backward(self, db_folded):
        e = self.k.elementwise
        db = e.mul(db_folded, self.scale)
        dgamma, dvar = _scale_grads(e, e.mul(db_folded, self.centred), self.scale, self.root)
        return ((db,) if self.has_bias else ()) + (dgamma, db_folded, e.neg(db), dvar)


def _scale_grads(e, dscale, scale, root):
    """(dγ, dvar) from the gradient of s = γ / root, root = √(var + ε)."""
    return e.div(dscale, root), e.mul(e.mul(dscale, scale), e.div(-0.5, e.mul(root, root)))


def fold_into_conv(weight, bias, gamma, beta, running_mean, running_var, eps):
    """An eval-mode batch norm folded into the conv before it -> (weight', bias'), so that
    conv(x, weight', bias') = batch_norm(conv(x, weight, bias)): with s = γ / √(running_var + ε),
    weight'[f] = s[f] · weight[f] and bias' = s · (bias − running_mean) + β (bias may be None). Two ops
    instead of eight small ones: the fold is redone at every inference call (the weights may have changed)."""
    return (FoldWeight.apply(weight, gamma, running_var, eps=float(eps)),
            FoldBias.apply(bias, gamma, beta, running_mean, running_var, eps=float(eps)))


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
    _check_arguments(input, running_mean, running_var, weight, bias, training, momentum)
    return BatchNorm.apply(input, weight, bias, running_mean, running_var,
                           training=bool(training), momentum=float(momentum), eps=float(eps))


def _check_arguments(input, running_mean, running_var, weight, bias, training, momentum):
    """Clear errors for batch_norm's (and batch_norm_activation's) arguments."""
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
        if count <= 1 and sync_sums is None:  # synced: the count over every process is checked in forward
            raise ValueError(f"batch_norm: expected more than 1 value per channel when training, "
                             f"got input of shape {input.shape}")
    elif running_mean is None or running_var is None:
        raise ValueError("batch_norm: eval mode (training=False) needs running_mean and running_var")


def batch_norm_activation(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
                          eps=1e-5, activation=None):
    """activation(batch_norm(...)) for activation None, "relu" or "relu6", as one fused op (the device's
    kernels with the capability "fused_activation", or their composition from kernels/compose.py); with
    synchronised batch norm, the two ops: the same values and gradients either way. Used by
    layers.BatchNormalization(activation=...)."""
    from . import activation as act_ops
    if activation not in (None, "relu", "relu6"):
        raise ValueError(f"batch_norm_activation: activation must be None, 'relu' or 'relu6', got {activation!r}")
    if activation is None or sync_sums is not None:
        y = batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)
        return y if activation is None else getattr(act_ops, activation)(y)
    _check_arguments(input, running_mean, running_var, weight, bias, training, momentum)
    return BatchNorm.apply(input, weight, bias, running_mean, running_var, training=bool(training),
                           momentum=float(momentum), eps=float(eps), activation=activation)

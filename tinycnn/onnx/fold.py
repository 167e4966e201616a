"""Batch norms folded into the conv before them, on a trace (tinycnn/trace.py), before it is written as ONNX.

tinycnn/fuse.py folds what Sequential models and the plate models declare; a functional Model (MobileNetV2)
runs its eval-mode batch norms as they are, channels-last ones on the (N·H·W, C) rows of the conv's output:

    y = conv(x, w[, b])   ->   rows = reshape(y, (−1, C))   ->   batch_norm(rows)   ->   reshape back

When y and rows are used by nothing else, the batch norm is an affine map per output channel, and the conv
takes it over: with s = γ / √(var + ε),  w' = s · w (per filter),  b' = s · (b − mean) + β  (b = 0 when the
conv has none). The batch norm call becomes an alias of its input (`Alias`), and its activation (fused
ReLU/ReLU6) moves to the conv when the conv has none. What does not match is left as it is.
"""
import dataclasses

import numpy as np

from ..ops import basic, batchnorm, conv
from ..tensor import Tensor

FOLDABLE = (conv.Conv2d, conv.Conv2dChannelsLast)


class Alias:
    """A call that passes its first argument on (a batch norm folded into the conv before it)."""


def fold_batch_norms(calls, outputs):
    """The calls with every foldable (conv → [reshape →] eval batch norm) group folded (module docstring)."""
    maker = {id(c.output): i for i, c in enumerate(calls)}
    uses = {}
    for c in calls:
        for t in c.tensor_args:
            uses[id(t)] = uses.get(id(t), 0) + 1
    for t in outputs:
        uses[id(t)] = uses.get(id(t), 0) + 1
    calls = list(calls)
    for i, call in enumerate(calls):
        if call.op is not batchnorm.BatchNorm or call.kwargs["training"]:
            continue
        found = _conv_before(calls, maker, uses, call.args[0])
        if found is None:
            continue
        at, conv_call = found
        activation = call.kwargs.get("activation")
        if activation is not None and _activation_of(conv_call) is not None:
            continue
        calls[at] = _folded(conv_call, call, activation)
        calls[i] = dataclasses.replace(call, op=Alias)
    return calls


def _conv_before(calls, maker, uses, x):
    """(index, call) of the conv whose output reaches the batch norm's input x alone, directly (NCHW) or
    through a reshape to its channels-last rows; None otherwise."""
    if uses.get(id(x)) != 1 or id(x) not in maker:
        return None
    made_by = calls[maker[id(x)]]
    if made_by.op is basic.Reshape:
        y = made_by.args[0]
        if (uses.get(id(y)) != 1 or id(y) not in maker or x.ndim != 2 or y.ndim != 4
                or x.shape[1] != y.shape[3]):
            return None
        at = maker[id(y)]
        return (at, calls[at]) if calls[at].op is conv.Conv2dChannelsLast else None
    at = maker[id(x)]
    return (at, made_by) if made_by.op is conv.Conv2d and x.ndim == 4 else None


def _activation_of(conv_call):
    return conv_call.kwargs.get("activation")


def _folded(conv_call, bn_call, activation):
    """The conv call with the batch norm's scale and shift in its weights (and its activation, if any)."""
    _, gamma, beta, mean, var = bn_call.args
    channels = mean.shape[0]
    x, w = conv_call.args[0], conv_call.args[1]
    b = conv_call.args[2] if len(conv_call.args) > 2 else None
    gamma = np.ones(channels, np.float64) if gamma is None else gamma.numpy().astype(np.float64)
    beta = np.zeros(channels, np.float64) if beta is None else beta.numpy().astype(np.float64)
    scale = gamma / np.sqrt(var.numpy().astype(np.float64) + bn_call.kwargs["eps"])
    bias = np.zeros(channels, np.float64) if b is None else b.numpy().astype(np.float64)
    dtype = w.dtype
    w_folded = Tensor((w.numpy() * scale.reshape(-1, 1, 1, 1)).astype(dtype))
    b_folded = Tensor(((bias - mean.numpy()) * scale + beta).astype(dtype))
    kwargs = dict(conv_call.kwargs)
    op = conv_call.op
    if activation is not None:
        if op is conv.Conv2d:
            op = {"relu": conv.Conv2dBiasReLU, "relu6": conv.Conv2dBiasReLU6}[activation]
        else:
            kwargs["activation"] = activation
    return dataclasses.replace(conv_call, op=op, args=(x, w_folded, b_folded), kwargs=kwargs)

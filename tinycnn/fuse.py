"""Fusion as a pass: a model in, its inference form out; layers never look at their neighbours.

    form = inference_form(model)    # built once, cached until a weight changes
    y = form(x)                     # the same outputs as model(x) in eval mode, fewer passes over memory

`predict` and `evaluate` run the inference form. It is a shallow copy of the model that shares its
parameters, in which runs of layers are replaced by fused steps:

- conv → batch norm (eval) [→ ReLU/ReLU6] becomes one conv, the batch norm folded into its weights once
  (ops/batchnorm.py `fold_into_conv`): with s = γ / √(moving_var + ε) per filter f,
      bn(conv(x)) = w' ∗ x + b',   w'[f] = s[f] · w[f],   b' = s · (b − moving_mean) + β,
  and the activation in the conv's own pass (`FoldedConv`);
- conv + ReLU → 2×2 max-pool (stride 2, valid, channels first) becomes one op that never writes the conv's
  full-size output (`ConvReLUMaxPool`);
- batch norm → ReLU/ReLU6 becomes one batch norm with the activation in its passes (`BatchNormActivation`).
  This one has a backward, so a Sequential model trains with it too (`training_steps`).

What may be fused is declared, never guessed from a forward:

- a Module whose forward runs a list of layers one after another declares `sequence = "<attribute>"` and
  runs `self._steps` (Sequential: `sequence = "layers"`); the pass fuses neighbours in that list;
- a hand-written Module declares `fusable = (("conv", "bn"), ...)`: attribute names (a layer, or parallel
  lists of layers) such that its forward always applies bn directly to conv's output and uses that output
  nowhere else; optionally a third name, an Activation/ReLU layer applied to bn's output. The pass puts the
  fused conv in the first slot and an identity in the others, so the module's own forward runs unchanged;
- layers say what they are with `fuses_as` ("conv", "batch_norm", "max_pool", "activation").

Cache: the form is kept on the model with a key made of every sub-module's identity and every parameter and
buffer's (array identity, version). Optimizer steps, `load_state_dict`, `to(device)` and batch norm's
running statistics bump a tensor's version (`Tensor.bump_version`); code that writes a weight's `.data` in
place itself must call it too. A conv or batch norm not built yet is not folded: it runs as it is, its
first call builds it, and the new weights change the key.
"""
import copy

from .ops.batchnorm import fold_into_conv
from .tensor import no_grad


def inference_form(model):
    """`model`'s inference form (eval mode, no gradients), from the cache while no weight has changed."""
    key = _weights_key(model)
    cached = model.__dict__.get("_inference_form")
    if cached is not None and cached[0] == key:
        return cached[1]
    with no_grad():
        form = fuse(model)
    object.__setattr__(model, "_inference_form", (key, form))
    return form


def fuse(module):
    """The inference form of `module`, built now (see the module docstring)."""
    if not module._modules:
        return module  # a leaf layer: nothing inside it to fuse
    form = copy.copy(module)
    form.__dict__.pop("_inference_form", None)
    for registry in ("_parameters", "_buffers", "_modules"):
        object.__setattr__(form, registry, dict(getattr(module, registry)))
    object.__setattr__(form, "training", False)
    replaced = {module.sequence}
    for names in module.fusable:
        replaced.update(_fuse_declared(module, form, names))
    for name, value in list(vars(module).items()):
        if name in replaced or name.startswith("_"):
            continue
        if _is_module(value):
            setattr(form, name, fuse(value))
        elif isinstance(value, list) and value and all(_is_module(v) for v in value):
            setattr(form, name, [fuse(v) for v in value])
    if module.sequence:
        object.__setattr__(form, "_steps", inference_steps(getattr(module, module.sequence)))
    return form


def inference_steps(layers):
    """A list of layers run one after another -> the fused steps that compute the same at inference."""
    steps, i = [], 0
    while i < len(layers):
        layer, after, then = layers[i], _at(layers, i + 1), _at(layers, i + 2)
        if _pools(layer, after):
            steps.append(ConvReLUMaxPool(layer))
            i += 2
        elif _folds(layer, after):
            activation = _activation_of(then) if after.activation is None else None
            steps.append(FoldedConv(layer, after, activation or after.activation))
            i += 3 if activation else 2
        elif _activation_after(layer, after):
            steps.append(BatchNormActivation(layer, after.activation))
            i += 2
        else:
            steps.append(fuse(layer))
            i += 1
    return steps


def training_steps(layers):
    """The steps for training: batch norm → ReLU/ReLU6 fused (the fused op has its backward), the rest as
    they are (folding needs the running statistics; the fused pool keeps no indices for a backward)."""
    steps, i = [], 0
    while i < len(layers):
        layer, after = layers[i], _at(layers, i + 1)
        if _activation_after(layer, after):
            steps.append(BatchNormActivation(layer, after.activation))
            i += 2
        else:
            steps.append(layer)
            i += 1
    return steps


# ---------------------------------------------------------------------- the fused steps

class FoldedConv:
    """conv → batch norm (eval) → activation as one conv, the batch norm folded into the weights once."""

    def __init__(self, conv, bn, activation):
        self.conv, self.activation = conv, activation
        self.kernel, self.bias = fold_into_conv(conv.kernel, conv.bias, bn.gamma, bn.beta, bn.moving_mean,
                                                bn.moving_variance, bn.epsilon)

    def __call__(self, x):
        with self.conv.errors_named(x.shape):
            return self.conv.forward_fused(x, self.kernel, self.bias, self.activation)


class ConvReLUMaxPool:
    """conv (ReLU) → MaxPooling2D(2) as one op (Conv2D.forward_pooled)."""

    def __init__(self, conv):
        self.conv = conv

    def __call__(self, x):
        with self.conv.errors_named(x.shape):
            return self.conv.forward_pooled(x)


class BatchNormActivation:
    """batch norm → ReLU/ReLU6 as one op: the activation in the batch norm's own passes, forward and backward."""

    def __init__(self, bn, activation):
        self.bn, self.activation = bn, activation

    def __call__(self, x):
        return self.bn(x, activation=self.activation)


class Identity:
    """A slot whose work a fused step before it has done."""

    def __call__(self, x):
        return x


# ---------------------------------------------------------------------- what fuses with what

def _fuse_declared(module, form, names):
    """Fuse one declared (conv, bn[, activation]) group of `module` into `form`; the names it replaced."""
    groups = [getattr(module, name) for name in names]
    if all(isinstance(g, list) for g in groups):
        fused = [_fuse_group(*members) for members in zip(*groups)]
        if not any(f is not None for f in fused):
            return set()
        for slot, name in enumerate(names):
            object.__setattr__(form, name, [f[slot] if f is not None else g for f, g in zip(fused, groups[slot])])
        return set(names)
    fused = _fuse_group(*groups)
    if fused is None:
        return set()
    for name, value in zip(names, fused):
        object.__setattr__(form, name, value)
    return set(names)


def _fuse_group(conv, bn, act=None):
    """(FoldedConv, Identity[, Identity]) when conv → bn [→ act] folds, else None."""
    if not _folds(conv, bn):
        return None
    activation = _activation_of(act) if act is not None and bn.activation is None else None
    if act is not None and activation is None:
        return None  # an activation the fused conv cannot apply: leave the group as it is
    folded = FoldedConv(conv, bn, activation or bn.activation)
    return (folded, Identity()) + ((Identity(),) if act is not None else ())


def _folds(conv, bn):
    """conv → bn folds: a conv without an activation of its own, a built batch norm on its channels."""
    return (_kind(conv) == "conv" and _kind(bn) == "batch_norm" and conv.activation is None
            and conv.built and bn.built and (bn.axis != 1) == conv.channels_last)


def _pools(conv, pool):
    return (_kind(conv) == "conv" and _kind(pool) == "max_pool" and conv.activation == "relu"
            and not conv.channels_last and pool.pool_size == (2, 2) and pool.strides == (2, 2)
            and pool.padding == "valid")


def _activation_after(bn, act):
    return _kind(bn) == "batch_norm" and bn.activation is None and _activation_of(act) is not None


def _activation_of(layer):
    """The activation of an Activation/ReLU layer when a fused conv or batch norm can apply it."""
    if _kind(layer) == "activation" and layer.activation in ("relu", "relu6"):
        return layer.activation
    return None


def _kind(layer):
    """What `layer`'s own class declares it fuses as (a subclass that does not declare it: None)."""
    return type(layer).__dict__.get("fuses_as")


def _at(layers, i):
    return layers[i] if i < len(layers) else None


def _is_module(value):
    return hasattr(value, "_modules") and hasattr(value, "fusable")


def _weights_key(model):
    """The cache key of `model`'s inference form: its modules, their tensors' arrays and versions. A layer
    built since (its first call creates its weights) changes the key. (Read on every predict: a plain stack,
    not named_modules' nested generators, which cost a 59-layer detector ~0.1 ms a call.)"""
    key, stack = [], [model]
    while stack:
        module = stack.pop()
        key.append(id(module))
        for tensors in (module._parameters, module._buffers):
            for t in tensors.values():
                key += (id(t.data), t.version)
        stack.extend(module._modules.values())
    return tuple(key)

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
  full-size output (`ConvReLUMaxPool`), also when a batch norm folded into the conv comes between;
- batch norm → ReLU/ReLU6 becomes one batch norm with the activation in its passes (`BatchNormActivation`).
  This one has a backward, so a Sequential model trains with it too (`training_steps`);
- [1×1 conv →] depthwise conv → 1×1 conv, channels last, each folded as above (MobileNetV2's inverted
  residual block, its residual add aside), becomes one op that runs the three band by band of output rows,
  so the expanded map never goes to memory whole (`SeparableConvs`; kernels/cpu/conv/separable.py).

What may be fused is declared, never guessed from a forward:

- a Module whose forward runs a list of layers one after another declares `sequence = "<attribute>"` and
  runs `self._steps` (Sequential: `sequence = "layers"`); the pass fuses neighbours in that list;
- a hand-written Module declares `fusable = (("conv", "bn"), ...)`: groups of attribute names (layers,
  parallel lists of layers, or modules that declare `chain`) such that its forward always applies each
  member directly to the previous one's output and uses that output nowhere else (an absent or None member
  is skipped). The pass fuses the group's layers as a Sequential's, puts the fused steps in the first slot
  and an identity in the others, so the module's own forward runs unchanged;
- a Module whose forward is nothing but its sub-modules called one after another declares them, in order,
  as `chain = ("conv", "bn")`: a group of another module may then hold it, its layers taking part;
- layers say what they are with `fuses_as` ("conv", "batch_norm", "max_pool", "activation").

Cache: the form is kept on the model with a key made of every sub-module's identity and every parameter and
buffer's (array identity, version). Optimizer steps, `load_state_dict`, `to(device)` and batch norm's
running statistics bump a tensor's version (`Tensor.bump_version`); code that writes a weight's `.data` in
place itself must call it too. A conv or batch norm not built yet is not folded: it runs as it is, its
first call builds it (a conv fused with the max pool after it too), and the new weights change the key.
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
            steps.append(ConvReLUMaxPool(layer, after))
            i += 2
        elif _folds(layer, after):
            activation = _activation_of(then) if after.activation is None else None
            steps.append(FoldedConv(layer, after, activation or after.activation))
            i += 3 if activation else 2
            if steps[-1].activation == "relu" and _pools(layer, _at(layers, i), activation="relu"):
                steps[-1] = ConvReLUMaxPool(layer, _at(layers, i), steps[-1])
                i += 1
        elif _activation_after(layer, after):
            steps.append(BatchNormActivation(layer, after.activation))
            i += 2
        else:
            steps.append(fuse(layer))
            i += 1
    return _separable_runs(steps)


def _separable_runs(steps):
    """Runs of [1×1 conv →] depthwise conv → 1×1 conv (channels last) merged into SeparableConvs steps."""
    merged, i = [], 0
    while i < len(steps):
        for width in (3, 2):
            convs = [_conv_of(step) for step in steps[i:i + width]]
            if len(convs) == width and _separable(convs):
                merged.append(SeparableConvs(*([None] * (3 - width) + convs)))
                i += width
                break
        else:
            merged.append(steps[i])
            i += 1
    return merged


def _conv_of(step):
    """(layer, kernel, bias, activation) of a step that is one channels-last conv (folded or a conv layer),
    with an activation the fused kernels apply; else None."""
    if isinstance(step, FoldedConv):
        layer, conv = step.conv, (step.conv, step.kernel, step.bias, step.activation)
    elif _kind(step) == "conv" and step.built and step.activation in (None, "relu", "relu6"):
        layer, conv = step, (step, step.kernel, step.bias, step.activation)
    else:
        return None
    return conv if layer.channels_last and layer.dilation_rate == (1, 1) else None


def _separable(convs):
    """convs (from _conv_of) are [1×1 →] depthwise → 1×1, each taking the previous one's channels."""
    if any(c is None for c in convs):
        return False
    *expand, depthwise, project = convs
    channels = [(c[1].shape[1] * c[0].groups, c[1].shape[0]) for c in convs]  # (in, out) of each
    pointwise = all(c[1].shape[2:] == (1, 1) and c[0].strides == (1, 1) and c[0].groups == 1 for c in expand + [project])
    is_depthwise = depthwise[1].shape[1] == 1 and depthwise[0].groups == depthwise[1].shape[0]
    chained = all(after[0] == before[1] for before, after in zip(channels, channels[1:]))
    return pointwise and is_depthwise and chained


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
        with self.conv.errors_named([t.shape for t in x] if isinstance(x, list) else x.shape):
            return self.conv.forward_fused(x, self.kernel, self.bias, self.activation)


class ConvReLUMaxPool:
    """conv (ReLU) → MaxPooling2D(2) as one op (Conv2D.forward_pooled); `folded`: the conv's FoldedConv (a batch
    norm folded into it, then the ReLU), whose weights it runs with instead of the layer's. An unbuilt conv is
    built here (a Sequential that predict builds through its inference form). If the fused op fails (an input
    too small for the pool), the two layers run one after the other, so that the error is theirs, naming the
    layer at fault."""

    def __init__(self, conv, pool, folded=None):
        self.conv, self.pool, self.folded = conv, pool, folded

    def __call__(self, x):
        try:
            with self.conv.errors_named(x.shape):
                if self.folded is None:
                    self.conv._build_once(x.shape)
                    return self.conv.forward_pooled(x)
                return self.conv.forward_pooled(x, self.folded.kernel, self.folded.bias)
        except ValueError:
            return self.pool(self.folded(x) if self.folded is not None else self.conv(x))


class BatchNormActivation:
    """batch norm → ReLU/ReLU6 as one op: the activation in the batch norm's own passes, forward and backward."""

    def __init__(self, bn, activation):
        self.bn, self.activation = bn, activation

    def __call__(self, x):
        return self.bn(x, activation=self.activation)


class SeparableConvs:
    """[1×1 conv →] depthwise conv → 1×1 conv, channels last, as one op (Conv2D.forward_separable), each conv
    given as (layer, kernel, bias, activation): its batch norm folded in where it had one (FoldedConv)."""

    def __init__(self, expand, depthwise, project):
        self.expand, self.depthwise, self.project = expand, depthwise, project

    def __call__(self, x):
        first = (self.expand or self.depthwise)[0]
        expand = self.expand[1:] if self.expand else None
        with first.errors_named(x.shape):
            return self.depthwise[0].forward_separable(x, expand, self.depthwise[1:], self.project[1:])


class Steps:
    """Fused steps run one after another: a declared group (`fusable`) that fused into more than one."""

    def __init__(self, steps):
        self.steps = steps

    def __call__(self, x):
        for step in self.steps:
            x = step(x)
        return x


class Identity:
    """A slot whose work a fused step before it has done."""

    def __call__(self, x):
        return x


# ---------------------------------------------------------------------- what fuses with what

def _fuse_declared(module, form, names):
    """Fuse one declared group of `module` (see `fusable`) into `form`; the names it replaced."""
    groups = [getattr(module, name, None) for name in names]
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
    replaced = {name for name, value in zip(names, fused) if value is not None}
    for name in replaced:
        object.__setattr__(form, name, fused[names.index(name)])
    return replaced


def _fuse_group(*members):
    """A declared group's replacements when its layers fuse: the fused steps in the first member's slot and
    an Identity in the others' (None for an absent member); None when nothing fuses (the members are then
    fused inside, each on its own)."""
    present = [m for m in members if m is not None]
    chains = [_chain_layers(m) for m in present]
    if not present or any(chain is None for chain in chains):
        return None
    layers = [layer for chain in chains for layer in chain]
    steps = inference_steps(layers)
    if len(steps) == len(layers):
        return None
    first = next(i for i, m in enumerate(members) if m is not None)
    fused = steps[0] if len(steps) == 1 else Steps(steps)
    return tuple(None if m is None else fused if i == first else Identity() for i, m in enumerate(members))


def _chain_layers(module):
    """The layers that `module` runs one after another: itself for a layer (no sub-modules), its declared
    `chain` flattened for a module that declares one, else None (its forward is not a plain chain)."""
    if not module._modules:
        return [module]
    if not module.chain:
        return None
    layers = []
    for name in module.chain:
        member = getattr(module, name, None)
        chain = [] if member is None else _chain_layers(member)
        if chain is None:
            return None
        layers += chain
    return layers


def _folds(conv, bn):
    """conv → bn folds: a conv without an activation of its own, a built batch norm on its channels."""
    return (_kind(conv) == "conv" and _kind(bn) == "batch_norm" and conv.activation is None
            and conv.built and bn.built and (bn.axis != 1) == conv.channels_last)


def _pools(conv, pool, activation=None):
    """conv (its ReLU, or `activation` when a fused step applies it) → 2×2 max pooling, channels first."""
    return (_kind(conv) == "conv" and _kind(pool) == "max_pool" and (activation or conv.activation) == "relu"
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

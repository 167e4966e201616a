"""Tracing: run a forward pass once and record every op it calls, for exporters (tinycnn/onnx/).

    t = trace(model, x)        # t.calls: [OpCall(op, args, kwargs, output, layer)], in the order they ran
                               # t.inputs, t.outputs: the Tensors that enter and leave the pass

Each op is a `Function` subclass whose `apply` (tinycnn/tensor.py) reports, while `recording` is active, its
class, the arguments it was called with (Tensors and plain values: stride, padding, dilation, groups, axis,
shapes, ...) and the Tensor it made. Nothing in the ops changes: the record is the call itself.

A Tensor argument that no recorded op made and that is not an input is a constant of the pass (a weight, a
batch norm folded into a conv's weights, a number made into a tensor). Every call also names the layer that
made it ("features.3.conv (Conv2D)"), found by walking up the Python stack to the nearest Module of the
traced model, so that an exporter can say which layer holds an op it cannot write.
"""
import sys
from dataclasses import dataclass, field

from .tensor import Tensor, no_grad, recording


@dataclass
class OpCall:
    op: type            # the Function subclass
    args: tuple         # positional arguments as `apply` got them (Tensors and plain values)
    kwargs: dict        # keyword arguments (the op's attributes)
    output: Tensor
    layer: str = ""     # "name (Class)" of the innermost module of the model that called it, or ""

    @property
    def tensor_args(self):
        return [a for a in self.args if isinstance(a, Tensor)]

    @property
    def attributes(self):
        """The plain (non-Tensor) arguments: what must not change between two traces of one model."""
        return tuple(a for a in self.args if not isinstance(a, Tensor)), dict(self.kwargs)


@dataclass
class Trace:
    inputs: list
    outputs: list
    calls: list = field(default_factory=list)

    def made(self):
        """ids of the tensors the pass computed from its inputs (the rest are constants)."""
        return {id(t) for t in self.inputs} | {id(c.output) for c in self.calls}


def trace(model, *inputs, modules=None):
    """Run `model(*inputs)` (no gradients) and record its ops. `modules`: more Modules to name layers from
    (an inference form's fused copies, tinycnn/fuse.py), besides `model`'s own."""
    names = _module_names(model, modules)
    calls = []

    def record(op, args, kwargs, output):
        calls.append(OpCall(op, args, dict(kwargs), output, _calling_layer(names)))

    with no_grad(), recording(record):
        out = model(*inputs)
    outputs = list(out) if isinstance(out, (list, tuple)) else [out]
    return Trace(list(inputs), outputs, calls)


def _module_names(model, extra):
    """{id(module): "name (Class)"}: the attribute path in the model ("features.3.conv"; a functional Model's
    layers: their names); a named layer elsewhere: "conv2d_3 (Conv2D at layers.0)"; the model: its own name."""
    names = {}
    for root in [model] + list(extra or []):
        if not hasattr(root, "named_modules"):
            continue
        for qualified, module in root.named_modules():
            qualified = qualified.rstrip(".")
            own = getattr(module, "name", None)
            own = own if isinstance(own, str) and own else None
            if own and qualified and own != qualified:  # a Sequential's layer: its name, and where it sits
                names.setdefault(id(module), f"{own} ({type(module).__name__} at {qualified})")
            else:
                names.setdefault(id(module), f"{qualified or own or 'model'} ({type(module).__name__})")
    return names


def _calling_layer(names):
    """The innermost module of the traced model on the Python stack (its `self` in some frame), or ""."""
    frame = sys._getframe(2)
    while frame is not None:
        owner = frame.f_locals.get("self")
        if owner is not None and id(owner) in names:
            return names[id(owner)]
        frame = frame.f_back
    return ""

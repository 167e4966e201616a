"""Inference plans: record the kernel calls of a model's inference pass once, then replay them.

    outputs = infer(model, x)      # what predict_step and test_step run: model's inference form on x (a Tensor,
                                   # or a list of them), through a plan for x's shapes when it can have one
    plan = InferencePlan(inference_form(model), x)
    (y,) = plan(x.data)            # the same arrays, bit for bit, as inference_form(model)(x) under no_grad

An ordinary forward pays, per op, for Python that decides the same thing on every call with the same shapes:
the layers' dispatch, the public functions' argument checks and normalisation (ops/*.py), Tensor objects and
`Function.apply`'s device look-up. A plan runs the pass once, recording its op calls as `trace` does
(tinycnn/trace.py), and keeps, per call, only what its `forward` needs: the op class, the kernel set, which
earlier value (an input, an earlier op's output or a constant: a weight, a folded batch norm, a stride) goes
into each argument, and its keyword attributes. Replaying is then a loop of `forward` calls on raw arrays:
the same kernels with the same arrays, hence the same outputs. Each intermediate is dropped right after its
last use, so that the CPU kernels' output cache (kernels/cpu/workspace.py) hands the same memory back to the
next replay: the buffers are allocated once and reused, and no kernel needs an `out=` argument for it.

The weights are constants of the plan: a backend that declares the conv capability "constant_weights"
(kernels/contract.py) is told so around each replay, and keeps what it derives from them (the CPU's
Winograd filter transform, U = G g Gᵀ) for the next replay instead of deriving it on every call.

When a plan is (re)built: plans live on the inference form (tinycnn/fuse.py), which is rebuilt when a weight
changes (its cache key holds every tensor's version), so a weight change drops them; one plan per input
shapes, dtypes and device (a batch size, the last partial batch of predict its own), `PLANS_PER_FORM` kept.

When there is none (the model runs its ordinary forward), declared and seen while recording, never probed:
- an op of the pass says `replayable = False` (Dropout's per-call seed; losses, whose target is one batch's);
- a module of the model says `replayable = False` (its forward draws random numbers or keeps state of its own);
- the pass reads a value it computed, or its input, on the host (`Tensor.numpy()`, `.item()`): its Python
  may then take another branch for another batch;
- the pass makes a Tensor from an array outside the ops (`Tensor(x.data * 2)`, a layer's mask, weights a
  layer builds on its first call): it may hold this batch's values, which a replay would keep;
- the inference form is the model itself (a model without sub-modules: nothing is cached to tie a plan to).
`enabled = False` (module attribute) or `with plans_off():` switches plans off, for debugging.
"""
import collections
import contextlib

from .device import kernels_for
from .fuse import inference_form
from .tensor import Tensor, is_grad_enabled, no_grad, recording
from .trace import OpCall

enabled = True
PLANS_PER_FORM = 4


@contextlib.contextmanager
def plans_off():
    """Inside this block `infer` runs the ordinary forward (a debugging switch)."""
    global enabled
    previous, enabled = enabled, False
    try:
        yield
    finally:
        enabled = previous


class _Plans(collections.OrderedDict):
    """An inference form's plans by input key (least recently used first). A copy of the model (deepcopy,
    pickle) starts with none: plans are rebuilt on the first call, and they hold the kernel modules."""

    def __deepcopy__(self, memo):
        return _Plans()

    def __reduce__(self):
        return _Plans, ()


class NotReplayable(Exception):
    """The pass cannot be replayed (the reason is the message); the model runs its ordinary forward."""


def infer(model, x):
    """`model`'s inference-form outputs for `x` (a Tensor or a list of Tensors), as `inference_form(model)(x)`
    returns them; through a plan for x's shapes under no_grad, when the model can have one."""
    form = inference_form(model)
    if not enabled or is_grad_enabled() or form is model:
        return form(x)
    inputs = list(x) if isinstance(x, (list, tuple)) else [x]
    if not all(isinstance(t, Tensor) for t in inputs):
        return form(x)
    plans = form.__dict__.get("_inference_plans")
    if plans is None:
        plans = _Plans()
        object.__setattr__(form, "_inference_plans", plans)
    key = tuple((t.shape, t.dtype.str, t.device) for t in inputs) + (isinstance(x, (list, tuple)),)
    if key in plans:
        plans.move_to_end(key)
        plan = plans[key]
        return form(x) if plan is None else plan.run(inputs)
    try:
        plan, outputs = InferencePlan.recorded(form, x)
    except NotReplayable:
        plan, outputs = None, None
    plans[key] = plan
    while len(plans) > PLANS_PER_FORM:
        plans.popitem(last=False)
    return form(x) if plan is None else outputs


class InferencePlan:
    """The recorded op calls of one inference pass of `form` on inputs of x's shapes (see the module doc).

    plan(*arrays) -> the output arrays (a list); plan.run(tensors) -> the outputs as the form returns them."""

    def __init__(self, form, x):
        """Record `form(x)` (form: a model's inference form, fuse.py, or any Module; x: a Tensor or a list)."""
        self._build(form, x)

    @classmethod
    def recorded(cls, form, x):
        """(the plan, the outputs of the pass recorded to make it): a plan's first call is not wasted."""
        plan = cls.__new__(cls)
        return plan, plan._build(form, x)

    def _build(self, form, x):
        declared = [type(m).__name__ for _, m in form.named_modules() if getattr(m, "replayable", True) is False]
        if declared:
            raise NotReplayable(f"{declared[0]} declares replayable = False")
        inputs = list(x) if isinstance(x, (list, tuple)) else [x]
        calls, host = _record(form, x)
        self.device = inputs[0].device
        self.output_form = type(calls.outputs) if type(calls.outputs) in (list, tuple) else None
        outputs = list(calls.outputs) if self.output_form else [calls.outputs]
        if not all(isinstance(t, Tensor) for t in outputs):
            raise NotReplayable("the pass returns something other than Tensors")
        computed = {id(t) for t in inputs} | {id(c.output) for c in calls.calls}
        if any(what == "read" and id(t) in computed for what, t in host):
            raise NotReplayable("the pass reads a value it computed on the host (Tensor.numpy / item)")
        if any(what == "made" for what, _ in host):
            raise NotReplayable("the pass makes a Tensor from an array outside the ops (it may hold this batch's "
                                "values, which a replay would keep)")
        for call in calls.calls:
            if not call.op.replayable:
                raise NotReplayable(f"{call.op.__name__} declares replayable = False")
            if any(isinstance(v, Tensor) for v in call.kwargs.values()):
                raise NotReplayable(f"{call.op.__name__} takes a Tensor as a keyword argument")
        self._compile(inputs, calls.calls, outputs)
        return calls.outputs

    def _compile(self, inputs, calls, outputs):
        """Number every value of the pass: the inputs 0..n-1, then, call by call, its constant arguments (a
        weight, a folded batch norm, a stride: kept in the `_values` template) and its output. A step is (op,
        kernels, its arguments' numbers, keyword arguments, its output's number, the numbers of the values
        whose last use it is)."""
        values, number = [None] * len(inputs), {id(t): i for i, t in enumerate(inputs)}

        def slot_of(value):
            if isinstance(value, Tensor) and id(value) in number:
                return number[id(value)]
            values.append(value.data if isinstance(value, Tensor) else value)  # a constant
            if isinstance(value, Tensor):
                number[id(value)] = len(values) - 1
            return len(values) - 1

        steps, last_use, computed = [], {}, set(range(len(inputs)))
        for index, call in enumerate(calls):
            slots = [slot_of(a) for a in call.args]
            values.append(None)
            out = number[id(call.output)] = len(values) - 1
            computed.add(out)
            for i in slots + [out]:
                last_use[i] = index
            steps.append((call.op, kernels_for(call.output.device), slots, call.kwargs, out))
        self._outputs = [slot_of(t) for t in outputs]
        dropped = [[] for _ in steps]
        for i, index in last_use.items():
            if i in computed and i not in self._outputs:
                dropped[index].append(i)
        self._values = values
        self._inputs = len(inputs)
        self._constants = [v for i, v in enumerate(values) if i >= len(inputs) and i not in computed]
        self._prepared = {}  # what the kernels derive from the constants (transformed filters), kept across calls
        k = kernels_for(self.device)
        self._constant_block = k.conv.constant_weights if k.has("conv", "constant_weights") else None
        self._steps = [step + (tuple(drop),) for step, drop in zip(steps, dropped)]

    def __call__(self, *arrays):
        values = self._values.copy()
        values[:self._inputs] = arrays
        with self._constant_block(self._constants, self._prepared) if self._constant_block else _no_block():
            for op, k, slots, kwargs, out, last_uses in self._steps:
                values[out] = op.forward(op(k), *[values[i] for i in slots], **kwargs)
                for i in last_uses:
                    values[i] = None
        return [values[i] for i in self._outputs]

    def run(self, tensors):
        """The plan on these input Tensors; the outputs as Tensors, in the form's own structure."""
        outputs = [Tensor(a, _device=self.device) for a in self(*[t.data for t in tensors])]
        return self.output_form(outputs) if self.output_form else outputs[0]

    def __len__(self):
        return len(self._steps)


_no_block = contextlib.nullcontext


def _record(form, x):
    """Run form(x) under no_grad: its op calls, and what it did with values on the host ([("read" or "made",
    tensor)], tinycnn/tensor.py `recording`)."""
    calls, host = [], []

    def record(op, args, kwargs, output):
        calls.append(OpCall(op, args, dict(kwargs), output))

    with no_grad(), recording(record, on_host=lambda what, tensor: host.append((what, tensor))):
        out = form(x)
    return _Recorded(calls, out), host


_Recorded = collections.namedtuple("_Recorded", "calls outputs")

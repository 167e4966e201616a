"""Tensor and reverse-mode autograd.

A `Tensor` wraps an array (`.data`: NumPy on the CPU, a numba device array on CUDA) and, when it was computed
from tensors that require a gradient, the `Function` that made it (`._ctx`). `backward()` walks that graph
from the output back to the leaves in reverse topological order, calling each Function's local `backward`
and accumulating (`+=`) the gradients of every input, so a tensor used twice receives both contributions.

Tensor's arithmetic (`a + b`, `a @ b`, `a.sum()`, ...) is defined in ops/basic.py, which attaches it here.

An op is a `Function` subclass with a `forward(*arrays)` and, right beside it, its `backward(grad)` that
returns one gradient per tensor input (or None). `self.k` is the kernel set of the inputs' device, so ops
never test which device they run on.
"""
import contextlib
import threading

import numpy as np

from .device import device_of, kernels_for, normalize_device

_state = threading.local()


def is_grad_enabled():
    return getattr(_state, "grad_enabled", True)


@contextlib.contextmanager
def no_grad():
    """Inside this block no graph is recorded (inference, optimizer steps)."""
    previous = is_grad_enabled()
    _state.grad_enabled = False
    try:
        yield
    finally:
        _state.grad_enabled = previous


@contextlib.contextmanager
def recording(recorder, on_host=None):
    """Inside this block every op calls recorder(op class, its args, its kwargs, its output) (tinycnn/trace.py);
    and, if given, on_host("read", tensor) on `Tensor.numpy()` and on_host("made", tensor) when a Tensor is made
    from an array outside the ops: Python that reads values or makes values of its own (tinycnn/plan.py)."""
    previous = getattr(_state, "recorder", None), getattr(_state, "on_host", None)
    _state.recorder, _state.on_host = recorder, on_host
    try:
        yield
    finally:
        _state.recorder, _state.on_host = previous


class Function:
    """One node of the graph: `apply` runs `forward` and records the inputs for `backward`."""
    # An inference plan (tinycnn/plan.py) may record a call once and replay `forward` on new arrays of the
    # same shapes; an op whose forward must not be replayed so (it draws a random seed per call, or its
    # arguments hold one batch's data) says `replayable = False`, and the model then runs as it is.
    replayable = True

    def __init__(self, k):
        self.k = k              # kernel set of the device
        self.inputs = ()        # the Tensor inputs, in call order
        self.needs_grad = ()    # needs_grad[i]: does input i need a gradient?

    @classmethod
    def apply(cls, *args, **kwargs):
        tensors = [a for a in args if isinstance(a, Tensor)]
        device = _common_device(tensors, cls.__name__)
        fn = cls(kernels_for(device))
        raw = [a.data if isinstance(a, Tensor) else a for a in args]
        track = is_grad_enabled() and any(t.requires_grad for t in tensors)
        if track:
            fn.arg_is_tensor = tuple(isinstance(a, Tensor) for a in args)
            fn.inputs = tuple(tensors)
            fn.needs_grad = tuple(t.requires_grad for t in tensors)
        out = Tensor(fn.forward(*raw, **kwargs), requires_grad=track, _device=device)
        if track:
            out._ctx = fn
        recorder = getattr(_state, "recorder", None)
        if recorder is not None:  # a forward pass being traced (tinycnn/trace.py)
            recorder(cls, args, kwargs, out)
        return out

    def forward(self, *args, **kwargs):
        raise NotImplementedError

    def backward(self, grad):
        """Return the gradient for each Tensor input (a tuple, or a single array for one input)."""
        raise NotImplementedError

    def tensor_grads(self, *grads):
        """Keep the gradients of the arguments that were Tensors (drop those of Python numbers)."""
        return tuple(g for g, is_tensor in zip(grads, self.arg_is_tensor) if is_tensor)


def _common_device(tensors, op_name):
    devices = {t.device for t in tensors}
    if len(devices) > 1:
        raise RuntimeError(f"{op_name}: tensors are on different devices {sorted(devices)}; "
                           "move them with .to(device) first")
    return devices.pop() if devices else "cpu"


class Tensor:
    """An n-dimensional array with an optional gradient. float32 by default; float64 is kept when given."""

    __array_priority__ = 100  # so that `ndarray * Tensor` calls Tensor.__rmul__
    version = 0  # counts in-place changes of `.data` (bump_version): cached derived values (fuse.py) check it

    def __init__(self, data, requires_grad=False, dtype=None, device=None, _device=None):
        if isinstance(data, Tensor):
            data = data.data
        if _device is None:  # public construction: normalise what the user gave
            data = _as_array(data, dtype)
            target = normalize_device(device) if device is not None else device_of(data)
            if target != device_of(data):
                data = _move(data, target)
            _device = target
            on_host = getattr(_state, "on_host", None)
            if on_host is not None:  # a pass being recorded makes a value outside the ops (tinycnn/plan.py)
                on_host("made", self)
        self.data = data
        self.device = _device
        self.requires_grad = bool(requires_grad)
        self.grad = None
        self._ctx = None
        if self.requires_grad and not np.issubdtype(np.dtype(self.data.dtype), np.floating):
            raise TypeError(f"only floating-point tensors can require a gradient (got {self.data.dtype})")

    # ------------------------------------------------------------------ properties
    shape = property(lambda self: tuple(self.data.shape))
    dtype = property(lambda self: np.dtype(self.data.dtype))
    ndim = property(lambda self: len(self.data.shape))
    size = property(lambda self: int(np.prod(self.data.shape)))
    T = property(lambda self: self.transpose())

    def __len__(self):
        return self.data.shape[0]

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        dev = "" if self.device == "cpu" else f", device='{self.device}'"
        return f"Tensor({self.numpy()!r}{dev}{grad})"

    # ------------------------------------------------------------------ conversions
    def numpy(self):
        """The data as a NumPy array (a copy from the GPU; the array itself on the CPU)."""
        on_host = getattr(_state, "on_host", None)
        if on_host is not None:  # a pass being recorded reads values (tinycnn/plan.py)
            on_host("read", self)
        return self.data if self.device == "cpu" else self.data.copy_to_host()

    def item(self):
        return self.numpy().item()

    def detach(self):
        return Tensor(self.data, _device=self.device)

    def to(self, device):
        device = normalize_device(device)
        if device == self.device:
            return self
        return Tensor(_move(self.data, device), requires_grad=self.requires_grad, _device=device)

    def astype(self, dtype):
        return Tensor(self._k().elementwise.astype(self.data, np.dtype(dtype)), _device=self.device)

    def _k(self):
        return kernels_for(self.device)

    # ------------------------------------------------------------------ autograd
    def backward(self, grad=None):
        """Accumulate d(self)/d(leaf) into every leaf's `.grad` that requires it."""
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad "
                               "(no input had requires_grad=True, or it was made under no_grad())")
        k = self._k()
        if grad is None:
            if self.size != 1:
                raise RuntimeError(f"backward() without a gradient needs a scalar output, got shape {self.shape}")
            grad = k.elementwise.ones(self.shape, self.dtype)
        elif isinstance(grad, Tensor):
            grad = grad.data
        grads = {id(self): grad}
        for node in reversed(_topological_order(self)):
            g = grads.pop(id(node), None)
            if g is None:
                continue
            if node._ctx is None:  # a leaf
                node.grad = g if node.grad is None else k.elementwise.add(node.grad, g)
                continue
            fn = node._ctx
            input_grads = fn.backward(g)
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            for parent, needs, pg in zip(fn.inputs, fn.needs_grad, input_grads):
                if not needs or pg is None:
                    continue
                if tuple(pg.shape) != parent.shape:
                    raise RuntimeError(f"{type(fn).__name__}.backward returned a gradient of shape "
                                       f"{tuple(pg.shape)} for an input of shape {parent.shape}")
                old = grads.get(id(parent))
                grads[id(parent)] = pg if old is None else k.elementwise.add(old, pg)

    def zero_grad(self):
        self.grad = None

    def bump_version(self):
        """Say that `.data` changed in place (an optimizer step, loaded weights, new batch-norm statistics),
        so that values computed from it (a batch norm folded into a conv, fuse.py) are computed again."""
        self.version += 1

    # ------------------------------------------------------------------ operators
    # + - * / ** @ [], exp, log, sqrt, reshape, flatten, transpose, sum, mean, max: the ops of ops/basic.py,
    # which attaches them to Tensor when it is imported (tinycnn/__init__.py imports it before anything
    # else can make a tensor). They live there, beside their backward, and this file needs no import of them.


def _topological_order(root):
    """Nodes that lead to `root`, each after all of its inputs (iterative: deep nets do not recurse)."""
    order, seen, stack = [], set(), [(root, False)]
    while stack:
        node, inputs_done = stack.pop()
        if inputs_done:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        if node._ctx is not None:
            for parent in node._ctx.inputs:
                if id(parent) not in seen:
                    stack.append((parent, False))
    return order


def _as_array(data, dtype):
    """User data -> array. Python numbers and lists become float32; float arrays keep float32/float64."""
    if device_of(data) == "cuda":
        return data if dtype is None else kernels_for("cuda").elementwise.astype(data, np.dtype(dtype))
    if dtype is not None:
        return np.require(np.asarray(data, dtype=dtype), requirements="C")
    array = np.asarray(data)
    if array.dtype == np.float64 and not isinstance(data, np.ndarray):
        array = array.astype(np.float32)  # Python floats and lists: float32, like torch.tensor
    elif array.dtype.kind in "iub" and not isinstance(data, np.ndarray):
        array = array.astype(np.float32)
    elif array.dtype == np.float16:
        array = array.astype(np.float32)
    elif array.dtype.kind not in "fiub":
        raise TypeError(f"cannot make a Tensor from an array of dtype {array.dtype}")
    return np.require(array, requirements="C")  # keeps 0-d arrays 0-d


def _move(array, device):
    if device == "cpu":
        return array.copy_to_host()
    return kernels_for("cuda").elementwise.asarray(np.ascontiguousarray(array), np.dtype(array.dtype))


def tensor(data, requires_grad=False, dtype=None, device=None):
    return Tensor(data, requires_grad=requires_grad, dtype=dtype, device=device)

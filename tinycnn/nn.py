"""Modules: containers of parameters and sub-modules, PyTorch-style.

    class Net(tinycnn.Module):
        def __init__(self, classes=2):
            super().__init__()
            self.conv = layers.Conv2D(16, 3, padding="same", activation="relu")
            self.head = layers.Conv2D(classes, 1)
        def forward(self, x):            # x: (N, C, H, W)
            return self.head(self.conv(x))
        def get_config(self):            # the __init__ arguments, so that load_model can rebuild it
            return {"classes": 2}

Attributes that are Parameters, Modules or lists of Modules are registered by `__setattr__`, so
`parameters()`, `state_dict()`, `to(device)`, `train()` and `eval()` reach them. A Module is a layer: the
training API (`compile`, `fit`, `evaluate`, `predict`, `save`) is a Model's (tinycnn/model.py): subclass
tinycnn.Model instead of tinycnn.Module for the network you train.
"""
import numpy as np

from .keras_tensor import call_symbolic, is_symbolic
from .registry import CLASSES
from .tensor import Tensor

_MODEL_METHODS = ("compile", "fit", "evaluate", "predict", "save", "train_step", "test_step", "predict_step")


class Parameter(Tensor):
    """A tensor that a Module trains: requires_grad=True, found by `Module.parameters()`."""

    def __init__(self, data, dtype=None):
        super().__init__(data, requires_grad=True, dtype=dtype)


class Module:
    registry = CLASSES  # "module.Class" -> class, for load_model (it rebuilds from a config: registry.py)
    input_format = "channels_first"  # fit/predict take (N, C, H, W) arrays; Sequential says channels_last
    # What the inference pass (tinycnn/fuse.py) may fuse, declared: `fusable`, groups of attribute names (a
    # layer, or a module that declares `chain`) whose calls forward applies one straight after the other, each
    # output used by the next only; `chain`, the attribute names whose calls, one after another, are the whole
    # of forward (absent or None ones skipped); `sequence`, the attribute of a list of layers that forward
    # runs in order through `self._steps` (Sequential's "layers").
    fusable = ()
    chain = ()
    sequence = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        CLASSES.register(cls)

    def __init__(self):
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "device", "cpu")

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}.__init__ must call super().__init__() first")
        for registry in (self._parameters, self._buffers, self._modules):
            registry.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, Module) for v in value):
            for i, module in enumerate(value):
                self._modules[f"{name}.{i}"] = module
        object.__setattr__(self, name, value)

    def register_buffer(self, name, tensor):
        """A tensor saved with the model and moved by `to`, but not trained (batch-norm statistics)."""
        self._buffers[name] = tensor
        object.__setattr__(self, name, tensor)

    def __getattr__(self, name):  # only for names not found: a layer asked to train says what to do
        if name in _MODEL_METHODS:
            raise AttributeError(f"{type(self).__name__} is a tinycnn.Module (a layer) and has no {name}(): "
                                 f"subclass tinycnn.Model instead (same __init__ and forward) to train it")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __repr__(self):
        inner = [f"  ({name}): " + repr(module).replace("\n", "\n  ") for name, module in self._modules.items()]
        config = _repr_config(self)
        if not inner:
            return f"{type(self).__name__}({config})"
        return f"{type(self).__name__}({config + ',' if config else ''}\n" + "\n".join(inner) + "\n)"

    # ------------------------------------------------------------------ calling
    def forward(self, *args):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args, **kwargs):
        if args and is_symbolic(args[0]):  # the functional API: record the call (tinycnn/keras_tensor.py)
            return call_symbolic(self, args[0])
        return self.forward(*args, **kwargs)

    def get_config(self):
        """The keyword arguments of __init__ (JSON-able), so that load_model can rebuild this module."""
        return {}

    # ------------------------------------------------------------------ traversal
    def named_modules(self, prefix=""):
        yield prefix, self
        for name, module in self._modules.items():
            yield from module.named_modules(f"{prefix}{name}.")

    def named_parameters(self):
        for prefix, module in self.named_modules():
            for name, p in module._parameters.items():
                yield prefix + name, p

    def named_buffers(self):
        for prefix, module in self.named_modules():
            for name, b in module._buffers.items():
                yield prefix + name, b

    def parameters(self):
        seen = set()
        for _, p in self.named_parameters():
            if id(p) not in seen:
                seen.add(id(p))
                yield p

    def count_params(self):
        return int(sum(p.size for p in self.parameters()))

    def train(self, mode=True):
        stack = [self]  # every module, without named_modules' nested generators (predict calls this twice)
        while stack:
            module = stack.pop()
            object.__setattr__(module, "training", mode)
            stack.extend(module._modules.values())
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    # ------------------------------------------------------------------ state
    def state_dict(self):
        """{name: NumPy array} of every parameter and buffer (copied to the host)."""
        state = {name: p.numpy().copy() for name, p in self.named_parameters()}
        state.update({name: b.numpy().copy() for name, b in self.named_buffers()})
        return state

    def load_state_dict(self, state):
        own = dict(self.named_parameters())
        own.update(self.named_buffers())
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise ValueError(f"state does not match {type(self).__name__}: missing {missing}, unexpected {unexpected}")
        for name, tensor in own.items():
            array = np.asarray(state[name])
            if array.shape != tensor.shape:
                raise ValueError(f"{name}: saved shape {array.shape} != model shape {tensor.shape}")
            tensor.data = Tensor(array.astype(tensor.dtype), device=tensor.device).data
            tensor.grad = None
            tensor.bump_version()

    def get_weights(self):
        """Keras' list of weight arrays (copies): each layer's parameters, then its buffers (batch-norm
        statistics), layer by layer in the order the layers were made."""
        return [tensor.numpy().copy() for tensor in self._weight_tensors()]

    def set_weights(self, weights):
        """Set every weight from a list as get_weights gives it (same order and shapes)."""
        tensors = self._weight_tensors()
        weights = list(weights)
        if len(weights) != len(tensors):
            raise ValueError(f"{type(self).__name__}.set_weights: expected {len(tensors)} arrays, got {len(weights)}")
        for index, (tensor, array) in enumerate(zip(tensors, weights)):
            array = np.asarray(array)
            if array.shape != tuple(tensor.shape):
                raise ValueError(f"{type(self).__name__}.set_weights: array {index} has shape {array.shape}, "
                                 f"the weight has {tuple(tensor.shape)}")
            tensor.data = Tensor(array.astype(tensor.dtype), device=tensor.device).data
            tensor.grad = None
            tensor.bump_version()

    def _weight_tensors(self):
        seen, tensors = set(), []
        for _, module in self.named_modules():
            for tensor in list(module._parameters.values()) + list(module._buffers.values()):
                if id(tensor) not in seen:
                    seen.add(id(tensor))
                    tensors.append(tensor)
        return tensors

    def save_weights(self, path):
        """Every parameter and buffer to a .safetensors file, by state_dict() name (tinycnn/weights.py)."""
        from .weights import save_weights
        return save_weights(self, path)

    def load_weights(self, path):
        """Weights from a .safetensors file with this model's names and shapes, in place (tinycnn/weights.py)."""
        from .weights import load_weights
        return load_weights(self, path)

    def to(self, device):
        """Move every parameter and buffer to `device` ('cpu', 'cuda' or 'auto'), in place."""
        from .device import normalize_device
        device = normalize_device(device)
        for _, module in self.named_modules():
            for tensor in list(module._parameters.values()) + list(module._buffers.values()):
                tensor.data = tensor.to(device).data
                tensor.device = device
                tensor.grad = None
                tensor.bump_version()
            object.__setattr__(module, "device", device)
        return self


def _repr_config(module):
    """A layer's config as keyword arguments (its name first), for repr; '' for a config that is empty."""
    try:
        config = module.get_config()
    except Exception:  # noqa: BLE001  (repr must not fail on a half-built module)
        config = {}
    return ", ".join(f"{key}={value!r}" for key, value in config.items()
                     if key == "input_shape" or not isinstance(value, (dict, list)))  # not the nested layers

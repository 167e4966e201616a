"""tinycnn.Model: a Module that trains (Keras' Model). Three ways to make one, one training engine for all
(tinycnn/trainer.py: compile, fit, evaluate, predict, save, and the overridable train_step / test_step /
predict_step):

    model = tinycnn.Sequential([layers.Conv2D(16, 3, input_shape=(32, 32, 3)), ...])     # a stack
    model = tinycnn.Model(inputs, outputs)                                               # functional
    class Net(tinycnn.Model):                                                            # subclassed
        def __init__(self, classes=2):
            super().__init__()
            self.conv = layers.Conv2D(16, 3, padding="same", activation="relu")
            self.head = layers.Conv2D(classes, 1)
        def call(self, x):                   # or forward(self, x), as PyTorch
            return self.head(self.conv(x))
        def get_config(self):                # the __init__ arguments, so that load_model can rebuild it
            return {"classes": 2}

`Model(inputs, outputs)` makes a functional model (tinycnn/functional_model.py's Functional, a Model subclass).
A subclassed model takes NCHW arrays, as PyTorch does (set `input_format = "channels_last"` in the class for
Keras' (N, H, W, C)). A plain tinycnn.Module is a layer: it has weights and a forward, no fit; make the
outermost module of a network a Model to train it.
"""
from .nn import Module
from .registry import CLASSES
from .trainer import Trainer


class Model(Trainer, Module):
    input_format = "channels_first"

    def __new__(cls, *args, **kwargs):
        if cls is Model and (args or "inputs" in kwargs or "outputs" in kwargs):
            return Module.__new__(_functional())
        return Module.__new__(cls)

    def __init__(self, name=None):
        super().__init__()
        self.name = name or _snake_case(type(self).__name__)

    def call(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define call() (or forward())")

    def forward(self, *args, **kwargs):
        return self.call(*args, **kwargs)

    @classmethod
    def from_config(cls, config):
        """A subclassed model from its __init__ arguments; a functional one from its graph (files that name
        the class 'Model' hold either)."""
        if cls is Model and "nodes" in config:
            return _functional().from_config(config)
        return cls(**config)

    def summary(self, print_fn=print):
        """Each sub-module with its class and parameter count (a subclassed model's shapes are known only
        when it runs; Sequential and functional models show theirs)."""
        rows = [(name, type(module).__name__, sum(p.size for p in module.parameters()))
                for name, module in self._modules.items()]
        width = max([len(f"{n} ({c})") for n, c, _ in rows] + [20]) + 2
        rule = "_" * (width + 14)
        print_fn(f'Model: "{self.name}"')
        print_fn(rule)
        print_fn(f"{'Layer (type)':<{width}}{'Param #':>14}")
        print_fn("=" * len(rule))
        for name, kind, params in rows:
            print_fn(f"{f'{name} ({kind})':<{width}}{params:>14,}")
        print_fn("=" * len(rule))
        print_fn(f"Total params: {self.count_params():,}")
        print_fn(rule)


def _functional():
    """tinycnn/functional_model.py's Functional (imported with tinycnn), found in the class registry: that
    module imports this one."""
    return CLASSES["tinycnn.functional_model.Functional"]


def _snake_case(name):
    return "".join("_" + c.lower() if c.isupper() and i else c.lower() for i, c in enumerate(name))

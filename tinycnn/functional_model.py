"""The Keras functional API: `Input`, layers called on symbolic tensors, `Model(inputs, outputs)`.

    inputs = tinycnn.Input((64, 64, 3))
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    skip = x
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2DTranspose(16, 3, strides=2, padding="same")(x)
    x = layers.concatenate([x, skip])
    outputs = layers.Conv2D(2, 1, activation="softmax")(x)
    model = tinycnn.Model(inputs, outputs)

Each layer call on a KerasTensor is recorded as a Node (tinycnn/keras_tensor.py); the Model replays its Nodes
in the order they were made (an order in which every Node's inputs come before it). Several inputs and outputs
(lists), a layer called more than once (shared weights) and a Model or Sequential called as a layer all work.

Shapes at the API are Keras' (H, W, C); like Sequential, the Model takes (N, H, W, C) arrays in fit/evaluate/
predict, runs NCHW inside and returns channels-last image outputs. A layer built for channels-last tensors
(data_format="channels_last", BatchNormalization(axis=-1)) is given (N, H, W, C) maps. Each image map is kept
in the layout of the layer that made it, and changed (a transpose) only where a layer needs the other one:
elementwise layers (activations but softmax, Add, Multiply, Dropout, Rescaling, ...) run in the layout they
are given, so a chain of channels-last convs, batch norms, ReLUs and residual Adds (MobileNetV2) runs
channels-last from its first conv to its last (`_plan_layouts`).

Weights are named by layer: `state_dict()` keys are "<layer name>.<weight>" ("block_1_expand.kernel"), so
converted weights find their layer. `count_params()` counts as Keras: the batch norms' moving statistics too.
"""
import itertools

from .keras_layout import keras_shape
from .keras_tensor import KerasTensor, Node, wants_channels_last
from .layers import Activation, Dropout, Input, InputLayer, LeakyReLU, Rescaling  # noqa: F401  (Input: layers_input.py)
from .layers_merge import _ElementwiseMerge
from .model import Model
from .nn import Module
from .registry import CLASSES, from_config, layer_class

_model_numbers = itertools.count(1)


class Functional(Model):
    """What `tinycnn.Model(inputs, outputs)` makes (tinycnn/model.py): a graph of layer calls."""
    input_format = "channels_last"

    def __init__(self, inputs, outputs, name=None):
        super().__init__(name or f"model_{next(_model_numbers)}")
        self._inputs_as_list = isinstance(inputs, (list, tuple))
        self._outputs_as_list = isinstance(outputs, (list, tuple))
        object.__setattr__(self, "inputs", list(inputs) if self._inputs_as_list else [inputs])
        object.__setattr__(self, "outputs", list(outputs) if self._outputs_as_list else [outputs])
        for t in self.inputs + self.outputs:
            if not isinstance(t, KerasTensor):
                raise TypeError(f"Model inputs and outputs must be symbolic tensors (from tinycnn.Input and layer "
                                f"calls), got {type(t).__name__}")
        object.__setattr__(self, "_nodes", _graph_nodes(self.inputs, self.outputs))
        object.__setattr__(self, "layers", _unique_layers(self._nodes))
        object.__setattr__(self, "_layouts", _plan_layouts(self.inputs, self._nodes))
        for layer in self.layers:
            self._modules[layer.name] = layer
        self.built, self._weights_built = True, True
        self.build_input_shape = self.inputs[0].tensor_shape if len(self.inputs) == 1 else None

    # ------------------------------------------------------------------ Keras' attributes
    @property
    def input(self):
        return self.inputs if self._inputs_as_list else self.inputs[0]

    @property
    def output(self):
        return self.outputs if self._outputs_as_list else self.outputs[0]

    def get_layer(self, name=None, index=None):
        if index is not None:
            return self.layers[index]
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"model '{self.name}' has no layer named {name!r}")

    # ------------------------------------------------------------------ running
    def forward(self, *args):
        values = list(args[0]) if len(args) == 1 and isinstance(args[0], (list, tuple)) else list(args)
        if len(values) != len(self.inputs):
            raise ValueError(f"model '{self.name}' takes {len(self.inputs)} input(s), got {len(values)}")
        env, runs_in, kept_in = {}, *self._layouts
        for t, value in zip(self.inputs, values):
            if tuple(value.shape[1:]) != t.tensor_shape:
                raise ValueError(f"model '{self.name}': input '{t.node.layer.name}' expects samples of shape "
                                 f"{keras_shape(t.tensor_shape)} (channels last), got "
                                 f"{keras_shape(value.shape[1:])}")
            env[id(t)] = value
        for node in self._nodes:
            if node.inputs is None:  # an InputLayer: its tensor is given
                continue
            layout = runs_in[id(node)]
            if isinstance(node.inputs, list):
                out = node.layer([_value_in(env, t, kept_in, layout) for t in node.inputs])
            else:
                out = node.layer(_value_in(env, node.inputs, kept_in, layout))
            for t, value in zip(node.outputs, out if isinstance(out, (list, tuple)) else [out]):
                env[id(t)] = value
        outs = [_value_in(env, t, kept_in, CHANNELS_FIRST) for t in self.outputs]
        return outs if self._outputs_as_list else outs[0]

    # ------------------------------------------------------------------ counting, summary
    def count_params(self):
        """Every weight, as Keras counts it: trainable parameters and the batch norms' moving statistics."""
        return int(sum(p.size for p in self.parameters()) + sum(b.size for _, b in self.named_buffers()))

    def summary(self, print_fn=print):
        calls = {}  # node -> which call of its layer it is (Keras' "conv2d[1][0]": the second call)
        for node in self._nodes:
            calls[id(node)] = sum(n.layer is node.layer for n in self._nodes[:self._nodes.index(node)])
        rows = [_summary_row(node, calls, self._nodes) for node in self._nodes]
        widths = (max(len(r[0]) for r in rows) + 2, max(len(r[1]) for r in rows) + 2, 12)
        rule = "_" * (sum(widths) + 30)
        print_fn(f'Model: "{self.name}"')
        print_fn(rule)
        print_fn(f"{'Layer (type)':<{widths[0]}}{'Output Shape':<{widths[1]}}{'Param #':>{widths[2]}}  Connected to")
        print_fn("=" * len(rule))
        for name, shape, params, connected in rows:
            print_fn(f"{name:<{widths[0]}}{shape:<{widths[1]}}{params:>{widths[2]}}  {connected}")
        trainable = sum(p.size for p in self.parameters())
        print_fn("=" * len(rule))
        print_fn(f"Total params: {self.count_params():,}")
        print_fn(f"Trainable params: {trainable:,}")
        print_fn(f"Non-trainable params: {self.count_params() - trainable:,}")
        print_fn(rule)

    # ------------------------------------------------------------------ saving
    def get_config(self):
        """Layers (class + config, in order) and the graph: each node's layer and inputs as [node, tensor]
        positions in the model's node list."""
        position = {id(node): i for i, node in enumerate(self._nodes)}

        def ref(t):
            return [position[id(t.node)], t.index]

        def refs(inputs):
            return [ref(t) for t in inputs] if isinstance(inputs, list) else ref(inputs)

        return {
            "name": self.name,
            "layers": [dict(zip(("class", "module"), CLASSES.describe(type(layer))), config=layer.get_config())
                       for layer in self.layers],
            "nodes": [{"layer": node.layer.name, "inputs": None if node.inputs is None else refs(node.inputs)}
                      for node in self._nodes],
            "inputs": [ref(t) for t in self.inputs], "outputs": [ref(t) for t in self.outputs],
            "inputs_as_list": self._inputs_as_list, "outputs_as_list": self._outputs_as_list,
        }

    @classmethod
    def from_config(cls, config):
        layers = {}
        for spec in config["layers"]:
            layer = from_config(layer_class(spec), spec["config"])
            layers[spec["config"].get("name", getattr(layer, "name", None))] = layer
        made = []  # each node's output tensors, in order
        for spec in config["nodes"]:
            layer = layers[spec["layer"]]
            if spec["inputs"] is None:
                made.append([layer.output])
                continue
            inputs = spec["inputs"]
            args = [made[n][i] for n, i in inputs] if isinstance(inputs[0], list) else made[inputs[0]][inputs[1]]
            out = layer(args)
            made.append(out if isinstance(out, list) else [out])
        inputs = [made[n][i] for n, i in config["inputs"]]
        outputs = [made[n][i] for n, i in config["outputs"]]
        return cls(inputs if config["inputs_as_list"] else inputs[0],
                   outputs if config["outputs_as_list"] else outputs[0], name=config.get("name"))


# ---------------------------------------------------------------------- graph helpers

def _graph_nodes(inputs, outputs):
    """The Nodes that lead from `inputs` to `outputs`, in creation order (a topological order)."""
    given = {id(t) for t in inputs}
    seen, stack = {}, list(outputs)
    while stack:
        t = stack.pop()
        node = t.node
        if id(node) in seen:
            continue
        seen[id(node)] = node
        if node.inputs is None:
            if id(t) not in given:
                raise ValueError(f"graph disconnected: an output needs input '{node.layer.name}' (shape {t.shape}), "
                                 "which is not among the model's inputs")
            continue
        stack.extend(node.input_list)
    for t in inputs:
        if id(t.node) not in seen:
            seen[id(t.node)] = t.node  # an input no output uses: still a model input
    return sorted(seen.values(), key=lambda node: node.id)


def _unique_layers(nodes):
    layers, names = [], {}
    for node in nodes:
        layer = node.layer
        if any(layer is known for known in layers):
            continue
        name = getattr(layer, "name", None) or type(layer).__name__.lower()
        if name in names:
            raise ValueError(f"two different layers are named {name!r} in one model: layer names must be unique")
        names[name] = layer
        layers.append(layer)
    return layers


CHANNELS_FIRST, CHANNELS_LAST = "channels_first", "channels_last"


def _runs_as_given(layer):
    """Layers that act on each element alone: the layout of their input does not matter to them."""
    if isinstance(layer, Activation):
        return layer.activation != "softmax"  # softmax runs over the channel axis, axis 1 in NCHW
    return isinstance(layer, (_ElementwiseMerge, Dropout, LeakyReLU, Rescaling))


def _plan_layouts(inputs, nodes):
    """({node: the layout its layer runs in}, {tensor: the layout its image map is kept in}), by id: inputs
    come NCHW; a channels-last layer runs NHWC; an elementwise layer runs in its inputs' layout when they agree;
    every other layer runs NCHW."""
    runs_in, kept_in = {}, {id(t): CHANNELS_FIRST for t in inputs}
    for node in nodes:
        if node.inputs is None:
            continue
        given = {kept_in[id(t)] for t in node.input_list if t.ndim == 4}
        if wants_channels_last(node.layer):
            layout = CHANNELS_LAST
        elif _runs_as_given(node.layer) and len(given) == 1:
            layout = given.pop()
        else:
            layout = CHANNELS_FIRST
        runs_in[id(node)] = layout
        for t in node.outputs:
            kept_in[id(t)] = layout if t.ndim == 4 else CHANNELS_FIRST
    return runs_in, kept_in


def _value_in(env, t, kept_in, layout):
    """The value of KerasTensor t in `layout` (an image map transposed once, then remembered in env)."""
    value = env[id(t)]
    if value.ndim != 4 or kept_in[id(t)] == layout:
        return value
    key = (id(t), layout)
    if key not in env:
        env[key] = value.transpose(0, 2, 3, 1) if layout == CHANNELS_LAST else value.transpose(0, 3, 1, 2)
    return env[key]


def _summary_row(node, calls, nodes):
    layer = node.layer
    params = 0
    if calls[id(node)] == 0 and isinstance(layer, Module):
        params = sum(p.size for p in layer.parameters()) + sum(b.size for _, b in layer.named_buffers())
    shapes = [t.shape for t in node.outputs]
    shape = str(shapes[0]) if len(shapes) == 1 else str(shapes)
    connected = ", ".join(f"{t.node.layer.name}[{calls[id(t.node)]}][{t.index}]" for t in node.input_list)
    return f"{layer.name} ({type(layer).__name__})", shape, f"{params:,}", connected

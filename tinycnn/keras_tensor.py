"""Symbolic tensors of the functional API: what a layer returns when it is called on `tinycnn.Input(...)`.

    x = tinycnn.Input((64, 64, 3))          # a KerasTensor: shape (None, 64, 64, 3), no data
    y = layers.Conv2D(8, 3)(x)              # a Node records (layer, inputs); y is the Node's output

Calling a layer (or a whole model) on KerasTensors runs it once on a batch of one zero sample, in eval mode
and without gradients: that builds its weights, checks the input's rank and layout (a wrong one fails here,
naming the layer and the shapes) and gives the output's shape. tinycnn.functional_model.Model then replays
the recorded Nodes on real tensors.

A KerasTensor's `shape` is Keras' (channels last, batch None); inside, image maps are NCHW
(tinycnn/keras_layout.py), which is what the layers see.
"""
import itertools

import numpy as np

from .keras_layout import keras_shape
from .tensor import Tensor, no_grad

_node_ids = itertools.count()


class KerasTensor:
    """A placeholder for a batch of tensors of known per-sample shape, produced by `node`."""

    def __init__(self, tensor_shape, node, index=0):
        self.tensor_shape = tuple(int(s) for s in tensor_shape)  # tinycnn's (C, H, W) for an image map
        self.node, self.index = node, index

    @property
    def shape(self):
        return (None,) + keras_shape(self.tensor_shape)

    @property
    def ndim(self):
        return len(self.tensor_shape) + 1

    def __repr__(self):
        return f"<KerasTensor shape={self.shape} from layer '{self.node.layer.name}'>"


class Node:
    """One call of `layer` on `inputs` (a KerasTensor or a list of them), giving `outputs` (a list)."""

    def __init__(self, layer, inputs):
        self.id = next(_node_ids)
        self.layer, self.inputs, self.outputs = layer, inputs, []

    @property
    def input_list(self):
        return [] if self.inputs is None else list(self.inputs) if isinstance(self.inputs, (list, tuple)) \
            else [self.inputs]

    def arguments(self, values):
        """The real tensors for this call, shaped as the call was (one tensor or a list)."""
        if isinstance(self.inputs, (list, tuple)):
            return [values[id(t)] for t in self.inputs]
        return values[id(self.inputs)]


def is_symbolic(x):
    """Whether a layer's argument is a KerasTensor, or a list/tuple holding one."""
    if isinstance(x, KerasTensor):
        return True
    return isinstance(x, (list, tuple)) and any(isinstance(t, KerasTensor) for t in x)


def call_symbolic(layer, inputs):
    """Record `layer(inputs)` as a Node and return its KerasTensor output(s)."""
    if isinstance(inputs, (list, tuple)) and not all(isinstance(t, KerasTensor) for t in inputs):
        raise TypeError(f"layer '{_name(layer)}': mixing symbolic tensors (from Input) with other values "
                        f"in {[type(t).__name__ for t in inputs]}")
    node = Node(layer, list(inputs) if isinstance(inputs, (list, tuple)) else inputs)
    samples = [Tensor(np.zeros((1,) + t.tensor_shape, np.float32), device=layer.device) for t in node.input_list]
    was_training = layer.training
    layer.eval()
    try:
        with no_grad():
            out = call_in_layout(layer, samples if isinstance(inputs, (list, tuple)) else samples[0])
    except (ValueError, TypeError) as error:
        shapes = ", ".join(str(t.shape) for t in node.input_list)
        cause = error.__cause__ if getattr(error, "_layer_named", False) and error.__cause__ else error
        raise type(error)(f"layer '{_name(layer)}' ({type(layer).__name__}) called on input(s) of shape {shapes} "
                          f"(Keras' channels-last shapes): {cause}") from None
    finally:
        layer.train(was_training)
    outs = list(out) if isinstance(out, (list, tuple)) else [out]
    node.outputs = [KerasTensor(o.shape[1:], node, i) for i, o in enumerate(outs)]
    return node.outputs if isinstance(out, (list, tuple)) else node.outputs[0]


def wants_channels_last(layer):
    """Whether a layer takes (N, H, W, C) image maps: a data_format="channels_last" conv or pooling, or a
    BatchNormalization(axis=-1). Layers with Keras axes of their own (Softmax, Concatenate) take NCHW maps."""
    return getattr(layer, "data_format", None) == "channels_last" or \
        (type(layer).__name__ == "BatchNormalization" and getattr(layer, "axis", 1) in (-1, 3))


def call_in_layout(layer, args):
    """Call a layer on NCHW image maps; a channels-last layer gets them as NHWC and gives NCHW back."""
    if not wants_channels_last(layer) or getattr(args, "ndim", 0) != 4:
        return layer(args)
    out = layer(args.transpose(0, 2, 3, 1))
    return out.transpose(0, 3, 1, 2) if out.ndim == 4 else out


def _name(layer):
    return getattr(layer, "name", type(layer).__name__)

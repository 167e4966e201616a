"""One converter per tinycnn op: a traced call (tinycnn/trace.py) -> ONNX nodes.

    CONVERTERS[op class](graph, call) -> the name of the call's output in the graph

`call.args` / `call.kwargs` are what the op's `apply` got: Tensors (looked up, or written as initializers, by
`graph.value`) and the attributes. The op's layout conventions carry over directly (NCHW, conv weights
(F, C/G, KH, KW), transposed-conv weights (C, F/G, KH, KW), as ONNX has them); a channels-last conv becomes
Conv between two Transposes (onnxruntime's transpose optimizer moves them out of runs of channels-last ops).

    conv2d [+ bias] [+ ReLU | ReLU6 | ReLU + 2×2 max-pool]  ->  Conv [Relu | Clip(0, 6)] [MaxPool]
    conv_transpose2d -> ConvTranspose          batch_norm (eval) -> BatchNormalization [Relu | Clip]
    max/avg pool -> MaxPool/AveragePool        interpolate -> Resize (nearest: asymmetric/floor; bilinear:
    softmax/log_softmax -> (Log)Softmax            pytorch_half_pixel or align_corners, exact sizes)
    linear -> Gemm(transB=1)                   + − × ÷, exp, log, sqrt, pow, matmul, reshape, transpose,
    pad -> Pad(constant)                         sum, max, concatenate, slicing: their ONNX namesakes
"""
import numpy as np

from ..checks import UserInputError
from ..ops import activation, basic, batchnorm, conv, interpolate, linear, pool, softmax
from .fold import Alias


class ExportError(UserInputError):
    """A model that cannot be written as ONNX; the message is one line naming the layer and the op."""


CONVERTERS = {}


def converts(*ops):
    def register(fn):
        for op in ops:
            CONVERTERS[op] = fn
        return fn
    return register


def _dtype(call):
    return call.output.dtype


def _activate(g, y, name, dtype):
    """y -> activation(y) for None, "relu" or "relu6"."""
    if name is None:
        return y
    if name == "relu":
        return g.elementwise("Relu", [y])
    if name == "relu6":
        return g.elementwise("Clip", [y, g.scalar(0.0, dtype), g.scalar(6.0, dtype)])
    raise ExportError(f"activation {name!r} has no ONNX form here")


# ---------------------------------------------------------------------- elementwise

BINARY = {basic.Add: "Add", basic.Sub: "Sub", basic.Mul: "Mul", basic.Div: "Div"}
UNARY = {basic.Neg: "Neg", basic.Exp: "Exp", basic.Log: "Log", basic.Sqrt: "Sqrt",
         activation.ReLU: "Relu", activation.Sigmoid: "Sigmoid", activation.Tanh: "Tanh"}


@converts(Alias)
def alias(g, call):
    """A batch norm folded into the conv before it (fold.py): its input is its output."""
    return g.value(call.args[0])


@converts(*BINARY)
def binary(g, call):
    a, b = (g.value(v, _dtype(call)) for v in call.args)
    return g.elementwise(BINARY[call.op], [a, b])


@converts(*UNARY)
def unary(g, call):
    return g.elementwise(UNARY[call.op], [g.value(call.args[0])])


@converts(activation.ReLU6)
def relu6(g, call):
    return _activate(g, g.value(call.args[0]), "relu6", _dtype(call))


@converts(activation.LeakyReLU)
def leaky_relu(g, call):
    x, slope = call.args
    return g.elementwise("LeakyRelu", [g.value(x)], alpha=float(slope))


@converts(basic.Pow)
def power(g, call):
    a, p = call.args
    return g.elementwise("Pow", [g.value(a), g.scalar(p, _dtype(call))])


# ---------------------------------------------------------------------- shapes and reductions

@converts(basic.MatMul)
def matmul(g, call):
    return g.node("MatMul", [g.value(t) for t in call.args])


@converts(basic.Reshape)
def reshape(g, call):
    """The traced target shape, the batch-sized axis (found by tracing two batch sizes) as -1."""
    x, shape = call.args
    shape = list(shape)
    batch_dims = getattr(call, "batch_dims", ())
    if len(batch_dims) > 1:
        raise ExportError(f"reshape to {tuple(shape)} mixes the batch into {len(batch_dims)} axes; "
                          "export with dynamic_batch=False")
    for axis in batch_dims:
        shape[axis] = -1
    return g.reshape(g.value(x), x.shape, shape, call.output.shape)


@converts(basic.Transpose)
def transpose(g, call):
    x, axes = call.args
    return g.transpose(g.value(x), axes)


@converts(basic.Sum)
def reduce_sum(g, call):
    x, axes, keepdims = call.args
    return g.node("ReduceSum", [g.value(x), g.ints(list(axes))], keepdims=int(keepdims))


@converts(basic.Max)
def reduce_max(g, call):
    x, axes, keepdims = call.args
    if g.opset >= 18:
        return g.node("ReduceMax", [g.value(x), g.ints(list(axes))], keepdims=int(keepdims))
    return g.node("ReduceMax", [g.value(x)], axes=list(axes), keepdims=int(keepdims))


@converts(basic.Concatenate)
def concatenate(g, call):
    return g.node("Concat", [g.value(t) for t in call.args], axis=int(call.kwargs["axis"]))


@converts(basic.GetItem)
def getitem(g, call):
    """Basic indexing (slices with steps, integers, one Ellipsis) -> Slice, then Squeeze for the integers."""
    x, index = call.args
    shape = x.shape
    items = list(index) if isinstance(index, tuple) else [index]
    if any(item is Ellipsis for item in items):
        at = items.index(Ellipsis)
        items[at:at + 1] = [slice(None)] * (len(shape) - len(items) + 1)
    starts, ends, axes, steps, dropped = [], [], [], [], []
    for axis, item in enumerate(items):
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            start = int(item) % shape[axis]
            starts, ends, axes, steps = starts + [start], ends + [start + 1], axes + [axis], steps + [1]
            dropped.append(axis)
        elif isinstance(item, slice):
            start, stop, step = item.indices(shape[axis])
            if (start, stop, step) == (0, shape[axis], 1):
                continue
            end = stop if stop >= 0 else -shape[axis] - 1  # a negative step running past index 0
            starts, ends, axes, steps = starts + [start], ends + [end], axes + [axis], steps + [step]
        else:
            raise ExportError(f"indexing with {type(item).__name__} (only slices and integers are exported)")
    y = g.value(x)
    if axes:
        y = g.node("Slice", [y, g.ints(starts), g.ints(ends), g.ints(axes), g.ints(steps)])
    if dropped:
        y = g.node("Squeeze", [y, g.ints(dropped)])
    return y


# ---------------------------------------------------------------------- convolutions

def _pads(padding):
    """(ph, pw) or (top, bottom, left, right) -> ONNX's [top, left, bottom, right]."""
    if len(padding) == 2:
        return [padding[0], padding[1], padding[0], padding[1]]
    top, bottom, left, right = padding
    return [top, left, bottom, right]


def _conv(g, x, call, channels_last=False):
    """Conv of x (a name, NCHW) with the call's weight, bias and geometry."""
    weights = call.tensor_args[1:]
    k = call.kwargs
    return g.node("Conv", [x] + [g.value(t) for t in weights], kernel_shape=list(weights[0].shape[2:]),
                  strides=list(k["stride"]), pads=_pads(k["padding"]), dilations=list(k["dilation"]),
                  group=int(k["groups"]))


@converts(conv.Conv2d, conv.Conv2dBiasReLU, conv.Conv2dBiasReLU6)
def conv2d(g, call):
    act = {conv.Conv2d: None, conv.Conv2dBiasReLU: "relu", conv.Conv2dBiasReLU6: "relu6"}[call.op]
    return _activate(g, _conv(g, g.value(call.args[0]), call), act, _dtype(call))


@converts(conv.Conv2dBiasReLUMaxPool2)
def conv2d_relu_maxpool2(g, call):
    y = _activate(g, _conv(g, g.value(call.args[0]), call), "relu", _dtype(call))
    return g.node("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])


@converts(conv.Conv2dChannelsLast)
def conv2d_channels_last(g, call):
    x = g.transpose(g.value(call.args[0]), (0, 3, 1, 2))
    y = _activate(g, _conv(g, x, call), call.kwargs["activation"], _dtype(call))
    return g.transpose(y, (0, 2, 3, 1))


@converts(conv.Conv2dChannelsLastSeparable)
def conv2d_channels_last_separable(g, call):
    """[1×1 →] depthwise → 1×1 (an inverted residual block, fused at inference): one Conv node each."""
    x, we, be, wd, bd, wp, bp = call.args
    k, dtype = call.kwargs, _dtype(call)
    act_e, act_d, act_p = k["activations"]

    def conv_node(y, w, b, activation, **geometry):
        inputs = [y, g.value(w)] + ([g.value(b)] if b is not None else [])
        return _activate(g, g.node("Conv", inputs, kernel_shape=list(w.shape[2:]), **geometry), activation, dtype)

    y = g.transpose(g.value(x), (0, 3, 1, 2))
    if we is not None:
        y = conv_node(y, we, be, act_e)
    y = conv_node(y, wd, bd, act_d, strides=list(k["stride"]), pads=_pads(k["padding"]),
                  dilations=list(k["dilation"]), group=int(wd.shape[0]))
    return g.transpose(conv_node(y, wp, bp, act_p), (0, 2, 3, 1))


@converts(conv.ConvTranspose2d)
def conv_transpose2d(g, call):
    weights = call.tensor_args[1:]
    k = call.kwargs
    ph, pw = k["padding"]
    return g.node("ConvTranspose", [g.value(t) for t in call.tensor_args], kernel_shape=list(weights[0].shape[2:]),
                  strides=list(k["stride"]), pads=[ph, pw, ph, pw], output_padding=list(k["output_padding"]),
                  dilations=list(k["dilation"]), group=int(k["groups"]))


@converts(conv.Pad)
def pad(g, call):
    left, right, top, bottom = call.kwargs["pad"]
    x = call.args[0]
    return g.node("Pad", [g.value(x), g.ints([0, 0, top, left, 0, 0, bottom, right]),
                          g.scalar(call.kwargs["value"], _dtype(call))], mode="constant")


# ---------------------------------------------------------------------- normalisation, pooling, resizing

@converts(batchnorm.BatchNorm)
def batch_norm(g, call):
    x, gamma, beta, mean, var = call.args
    k = call.kwargs
    if k["training"]:
        raise ExportError("batch norm in training mode (export runs the model in eval mode)")
    if mean is None or var is None:
        raise ExportError("batch norm without running statistics")
    channels, dtype = x.shape[1], _dtype(call)
    scale = g.value(gamma) if gamma is not None else g.constant(np.ones(channels, dtype), "gamma")
    shift = g.value(beta) if beta is not None else g.constant(np.zeros(channels, dtype), "beta")
    y = g.node("BatchNormalization", [g.value(x), scale, shift, g.value(mean), g.value(var)],
               epsilon=float(k["eps"]))
    return _activate(g, y, k.get("activation"), dtype)


@converts(pool.MaxPool2d)
def max_pool(g, call):
    x, kernel, stride, padding = call.args
    return g.node("MaxPool", [g.value(x)], kernel_shape=list(kernel), strides=list(stride), pads=_pads(padding))


@converts(pool.AvgPool2d)
def avg_pool(g, call):
    x, kernel, stride, padding, count_include_pad = call.args
    return g.node("AveragePool", [g.value(x)], kernel_shape=list(kernel), strides=list(stride),
                  pads=_pads(padding), count_include_pad=int(count_include_pad))


@converts(interpolate.UpsampleNearest2d)
def upsample_nearest(g, call):
    x, (sh, sw) = call.args
    scales = g.constant(np.asarray([1, 1, sh, sw], np.float32), "scales")
    return g.node("Resize", [g.value(x), "", scales], mode="nearest",
                  coordinate_transformation_mode="asymmetric", nearest_mode="floor")


@converts(interpolate.UpsampleNearest2dLast)
def upsample_nearest_last(g, call):
    x, (sh, sw) = call.args
    scales = g.constant(np.asarray([1, sh, sw, 1], np.float32), "scales")
    return g.node("Resize", [g.value(x), "", scales], mode="nearest",
                  coordinate_transformation_mode="asymmetric", nearest_mode="floor")


@converts(interpolate.UpsampleBilinear2d)
def upsample_bilinear(g, call):
    """Resize to the exact sizes: (N, C) from the input's shape, then the traced (OH, OW)."""
    x, out_hw, align_corners = call.args
    name = g.value(x)
    batch_and_channels = g.node("Slice", [g.node("Shape", [name]), g.ints([0]), g.ints([2])])
    sizes = g.node("Concat", [batch_and_channels, g.ints(list(out_hw))], axis=0)
    mode = "align_corners" if align_corners else "pytorch_half_pixel"
    return g.node("Resize", [name, "", "", sizes], mode="linear", coordinate_transformation_mode=mode)


@converts(softmax.Softmax, softmax.LogSoftmax)
def softmax_(g, call):
    x, dim = call.args
    return g.node("Softmax" if call.op is softmax.Softmax else "LogSoftmax", [g.value(x)], axis=int(dim))


@converts(linear.Linear)
def dense(g, call):
    return g.node("Gemm", [g.value(t) for t in call.tensor_args], transB=1)

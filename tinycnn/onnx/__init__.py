"""ONNX export: a tinycnn model -> a .onnx file that onnxruntime, OpenCV's dnn or TensorRT can run.

    tinycnn.onnx.export(model, "model.onnx")                       # input shape from the model
    tinycnn.onnx.export(model, "model.onnx", input_shape=(96, 96, 3), opset=17, dynamic_batch=True)
    python -m tinycnn.export RUN/best.tcnn model.onnx

How: the model's inference form (tinycnn/fuse.py: batch norms folded into the convs before them where it
can; fold.py folds those of functional models, the others are written as BatchNormalization) is run once on a random batch while every op call is recorded
(tinycnn/trace.py); each call becomes ONNX nodes (ops.py). Any model kind works the same way: Sequential,
functional Model, a subclassed Module. With `dynamic_batch` the forward is traced at two batch sizes, and the
one axis of each reshape that follows the batch becomes -1: the file takes any batch size.

The file's input is what `model.predict` takes: (N, H, W, C) for Sequential and Model (one Transpose to the
NCHW the model runs inside), (N, C, H, W) for a Module; 4-D outputs come back in the same layout. The
model's metadata (task, class names, image size, colour mode) and its preprocessing are in the file's
metadata_props, JSON-encoded where not text. An op without an ONNX form is refused with one line naming the
layer and the op. Needs the `onnx` package (`pip install tinycnn[onnx]`).
"""
import json

import numpy as np

from ..fuse import inference_form
from ..tensor import Tensor, no_grad
from ..trace import trace
from .fold import fold_batch_norms
from .graph import Graph
from .ops import CONVERTERS, ExportError

MIN_OPSET = 13
SKIPPED_METADATA = ("history", "epochs_done")


def export(model, path, input_shape=None, opset=17, dynamic_batch=True):
    """Write `model` to `path` as ONNX; returns the path. input_shape: one sample's shape as `predict` takes it
    ((H, W, C) for Sequential/Model, (C, H, W) for a Module), by default the model's own."""
    onnx = _require_onnx()
    newest = onnx.defs.onnx_opset_version()
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise ExportError(f"export: opset must be an int from {MIN_OPSET} to {newest} (onnx {onnx.__version__}), "
                          f"got {opset!r}")
    if len(getattr(model, "inputs", None) or []) > 1:
        raise ExportError(f"export: model '{getattr(model, 'name', '')}' has {len(model.inputs)} inputs; "
                          "models with one input are exported")
    sample = _sample_shape(model, input_shape)
    channels_last = model.input_format == "channels_last" and len(sample) == 3
    traces = _traces(model, sample, channels_last, (2, 3) if dynamic_batch else (1,))
    graph = Graph(opset)
    first = traces[0]
    graph.names[id(first.inputs[0])] = graph.transpose("input", (0, 3, 1, 2)) if channels_last else "input"
    first.calls = fold_batch_norms(first.calls, first.outputs)
    _convert_calls(graph, first)
    outputs, output_infos = _outputs(graph, first, channels_last, dynamic_batch, onnx)
    batch = "N" if dynamic_batch else 1
    dtype = onnx.helper.np_dtype_to_tensor_dtype(first.inputs[0].dtype)
    graph_proto = onnx.helper.make_graph(
        graph.used_nodes(outputs), getattr(model, "name", type(model).__name__) or "tinycnn",
        [onnx.helper.make_tensor_value_info("input", dtype, [batch, *sample])], output_infos,
        initializer=graph.initializers)
    proto = onnx.helper.make_model(graph_proto, opset_imports=[onnx.helper.make_opsetid("", opset)],
                                   producer_name="tinycnn", doc_string=type(model).__name__)
    # the oldest IR version that carries the opset, so that older onnxruntime releases read the file
    proto.ir_version = min(proto.ir_version, 9 if opset <= 20 else 10 if opset <= 22 else proto.ir_version)
    onnx.helper.set_model_props(proto, model_metadata(model, sample, channels_last))
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def _require_onnx():
    try:
        import onnx
    except ImportError:
        raise ExportError("ONNX export needs the onnx package: pip install 'tinycnn[onnx]'") from None
    return onnx


# ---------------------------------------------------------------------- tracing

def _sample_shape(model, input_shape):
    """One sample's shape in the layout `predict` takes."""
    if input_shape is not None:
        return tuple(int(s) for s in input_shape)
    channels_last = model.input_format == "channels_last"
    shape = getattr(model, "build_input_shape", None)  # NCHW (C, H, W) for Sequential and Model
    if shape is not None:
        shape = tuple(int(s) for s in shape)
        return (shape[1], shape[2], shape[0]) if channels_last and len(shape) == 3 else shape
    meta = getattr(model, "metadata", None) or {}
    if "img_size" in meta:
        size, channels = int(meta["img_size"]), 1 if meta.get("grayscale") else 3
        return (size, size, channels) if channels_last else (channels, size, size)
    layout = "(H, W, C)" if channels_last else "(C, H, W)"
    raise ExportError(f"export: {type(model).__name__} does not record its input shape; give input_shape={layout}")


def _traces(model, sample, channels_last, batch_sizes):
    """The model's inference form traced at each batch size (the calls of the first, checked against the
    others: `call.batch_dims` says which axes of a reshape follow the batch)."""
    was_training = model.training
    model.eval()
    try:
        traces = []
        for batch in batch_sizes:
            x = np.random.default_rng(batch).standard_normal((batch, *sample)).astype(np.float32)
            x = Tensor(np.ascontiguousarray(x.transpose(0, 3, 1, 2) if channels_last else x), device=model.device)
            with no_grad():
                model(x)  # builds the layers a first call builds, so that the inference form folds them
            traces.append(trace(inference_form(model), x, modules=[model]))
    finally:
        model.train(was_training)
    for call in traces[0].calls:
        call.batch_dims = ()
    for other in traces[1:]:
        _compare(traces[0], other)
    return traces


def _compare(first, other):
    """Two traces of one model at two batch sizes (and two random inputs) run the same ops with the same
    attributes and constants; the axes where a reshape's target differs are the batch's."""
    if [c.op for c in first.calls] != [c.op for c in other.calls]:
        raise ExportError("export: the model runs different ops for different batch sizes; export with "
                          "dynamic_batch=False")
    made = other.made()
    for a, b in zip(first.calls, other.calls):
        if a.op.__name__ == "Reshape":
            a.batch_dims = tuple(i for i, (p, q) in enumerate(zip(a.args[1], b.args[1])) if p != q)
        elif not _same(a.attributes, b.attributes):
            raise ExportError(f"{_where(a)}: op {a.op.__name__} has attributes that change with the batch size; "
                              "export with dynamic_batch=False")
        for ta, tb in zip(a.tensor_args, b.tensor_args):
            if id(tb) in made or ta is tb:
                continue
            if ta.shape != tb.shape:
                raise ExportError(f"{_where(a)}: op {a.op.__name__} uses a constant whose shape follows the batch "
                                  "size (made outside tinycnn's ops?); export with dynamic_batch=False")
            if not np.array_equal(ta.numpy(), tb.numpy()):
                raise ExportError(f"{_where(a)}: op {a.op.__name__} uses a tensor computed outside tinycnn's ops "
                                  "(its value changes with the input), which a trace cannot see")


def _same(a, b):
    try:
        return bool(a == b)
    except (ValueError, TypeError):
        return repr(a) == repr(b)


def _where(call):
    return f"layer '{call.layer}'" if call.layer else "the model's own forward"


# ---------------------------------------------------------------------- converting

def _convert_calls(graph, traced):
    """Each call of the trace -> nodes. A call on constants alone (a batch norm folded into a conv's weights)
    is not written: its output is a constant, written as an initializer where it is used."""
    made = {id(t) for t in traced.inputs}
    for call in traced.calls:
        if not any(id(t) in made for t in call.tensor_args):
            continue
        converter = CONVERTERS.get(call.op)
        if converter is None:
            raise ExportError(f"{_where(call)}: op {call.op.__name__} cannot be exported to ONNX "
                              "(no converter in tinycnn/onnx/ops.py)")
        try:
            graph.names[id(call.output)] = converter(graph, call)
        except ExportError as error:
            raise ExportError(f"{_where(call)}: op {call.op.__name__}: {error}") from None
        made.add(id(call.output))


def _outputs(graph, traced, channels_last, dynamic_batch, onnx):
    """The graph's output names ("output", or "output_0", ...) and their value infos; 4-D outputs back to
    channels last for a channels-last model."""
    names, infos = [], []
    for i, t in enumerate(traced.outputs):
        if id(t) not in graph.names:
            raise ExportError("export: a model output does not depend on the input")
        value, shape = graph.names[id(t)], list(t.shape)
        if channels_last and t.ndim == 4:
            value, shape = graph.transpose(value, (0, 2, 3, 1)), [shape[0], shape[2], shape[3], shape[1]]
        name = "output" if len(traced.outputs) == 1 else f"output_{i}"
        graph.nodes.append(onnx.helper.make_node("Identity", [value], [name]))
        shape[0] = "N" if dynamic_batch else shape[0]
        infos.append(onnx.helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(t.dtype), shape))
        names.append(name)
    return names, infos


# ---------------------------------------------------------------------- metadata

def model_metadata(model, sample, channels_last):
    """{key: text} for metadata_props: the model's metadata (JSON-encoded where not text) and "preprocessing",
    what to do to an image before the model: size, colour mode, scaling, layout, class names."""
    meta = {k: v for k, v in (getattr(model, "metadata", None) or {}).items() if k not in SKIPPED_METADATA}
    props = {str(k): v if isinstance(v, str) else json.dumps(v, default=str) for k, v in meta.items()}
    pre = {"layout": "NHWC" if channels_last else ("NCHW" if len(sample) == 3 else "flat"),
           "input_shape": list(sample)}
    if len(sample) == 3:
        (height, width, channels) = sample if channels_last else (sample[1], sample[2], sample[0])
        pre.update(height=height, width=width, colour_mode={1: "grayscale", 3: "rgb"}.get(channels, f"{channels}"))
    if "task" in meta:  # tinycnn's tasks read images as pixels / 255 (tinycnn/data/images.py)
        pre["scale"] = 1 / 255
        pre["offset"] = 0.0
        pre["resize"] = "letterbox" if str(meta["task"]).startswith("plates") else meta.get("resize") or "stretch"
    if "class_names" in meta:
        pre["class_names"] = list(meta["class_names"])
    props["preprocessing"] = json.dumps(pre)
    props["tinycnn_class"] = type(model).__name__
    return props

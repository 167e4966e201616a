"""ONNX export (tinycnn/onnx/): each layer type and each task model, exported and run by onnxruntime, gives
what tinycnn's predict gives (max abs difference ≤ 1e-4, batch 1 and 3); an op without an ONNX form is
refused with one line naming the layer and the op; the preprocessing is in the file's metadata."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

import tinycnn
from tinycnn import layers
from tinycnn.tensor import Function

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from tinycnn.onnx import ExportError, export  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tasks.catdog import seed_model, strong_model  # noqa: E402
from tasks.plates_models import PlateBoxRegressor, PlateSegmenter  # noqa: E402

TOLERANCE = 1e-4


def randomise_statistics(model, seed=0):
    """Batch norms with statistics and scales away from their initial 0/1, so that a wrong fold shows."""
    rng = np.random.default_rng(seed)
    for name, tensor in list(model.named_buffers()) + list(model.named_parameters()):
        if name.endswith(("moving_variance", "gamma")):
            tensor.data[...] = rng.uniform(0.5, 1.5, tensor.shape)
        elif name.endswith(("moving_mean", "beta")):
            tensor.data[...] = rng.normal(0.0, 0.2, tensor.shape)
        else:
            continue
        tensor.bump_version()
    return model


def build(model, sample):
    """Run a model once so that its lazily built layers have weights."""
    model.eval()
    if getattr(model, "build_input_shape", False) is None:  # a Sequential without input_shape: as fit records it
        model.build_input_shape = sample
    with tinycnn.no_grad():
        model(tinycnn.Tensor(np.zeros((1,) + sample, np.float32)))
    return model


def assert_exports(model, sample, tmp_path, input_shape=None, name="model"):
    """export -> onnxruntime == predict (a plain Module: its forward) for batches of 1 and 3 (sample: one input in
    predict's layout)."""
    path = tmp_path / f"{name}.onnx"
    export(model, path, input_shape=input_shape)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        x = np.random.default_rng(batch).random((batch,) + sample).astype(np.float32)
        expected = model.predict(x) if hasattr(model, "predict") else forward(model, x)
        got = session.run(None, {"input": x})[0]
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= TOLERANCE, f"{name}, batch {batch}"
    return onnx.load(str(path))


def forward(model, x):
    """What a plain Module (a layer: no predict) gives for x, in eval mode."""
    model.eval()
    with tinycnn.no_grad():
        return model(tinycnn.Tensor(x)).numpy()


def op_types(proto):
    return {node.op_type for node in proto.graph.node}


# ---------------------------------------------------------------------- layer types (Sequential)

LAYER_STACKS = {
    "conv_relu_pool": lambda: [layers.Conv2D(4, 3, activation="relu"), layers.MaxPooling2D(2)],
    "conv_same_stride_dilation": lambda: [layers.Conv2D(4, 3, strides=2, padding="same"),
                                         layers.Conv2D(3, 3, dilation_rate=2, padding="same", activation="tanh")],
    "conv_bn_relu6": lambda: [layers.Conv2D(4, 3, use_bias=False), layers.BatchNormalization(),
                              layers.ReLU(6.0)],
    "bn_activation": lambda: [layers.BatchNormalization(), layers.Activation("relu"), layers.Activation("sigmoid")],
    "depthwise_grouped": lambda: [layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2),
                                  layers.Conv2D(4, 1, groups=2), layers.LeakyReLU(0.2)],
    "transpose_conv": lambda: [layers.Conv2DTranspose(4, 3, strides=2, padding="same"),
                               layers.Conv2DTranspose(2, 2, strides=2)],
    "upsampling": lambda: [layers.UpSampling2D(2), layers.UpSampling2D(2, interpolation="bilinear")],
    "pools": lambda: [layers.MaxPooling2D(3, strides=2, padding="same"), layers.AveragePooling2D(2),
                      layers.AveragePooling2D(3, strides=1, padding="same")],
    "padding_cropping": lambda: [layers.ZeroPadding2D(((1, 2), (0, 1))), layers.Cropping2D(((1, 0), (2, 1)))],
    "dense_head": lambda: [layers.Conv2D(4, 3), layers.Flatten(), layers.Dense(5, activation="relu"),
                           layers.Dropout(0.5), layers.Dense(3, activation="softmax")],
    "global_pools": lambda: [layers.GlobalMaxPooling2D(), layers.Dense(2, activation="sigmoid")],
    "softmax_map": lambda: [layers.Conv2D(3, 1, activation="softmax")],
    "rescaling": lambda: [layers.Rescaling(1 / 255, offset=-0.5), layers.Conv2D(2, 1)],
}


@pytest.mark.parametrize("stack", sorted(LAYER_STACKS))
def test_sequential_layer_types(stack, tmp_path):
    model = build(tinycnn.Sequential(LAYER_STACKS[stack]()), (3, 12, 12))
    randomise_statistics(model)
    assert_exports(model, (12, 12, 3), tmp_path, name=stack)


def test_functional_model_merges_and_layouts(tmp_path):
    inputs = tinycnn.Input((16, 16, 3))
    x = layers.Conv2D(8, 3, padding="same", data_format="channels_last", use_bias=False)(inputs)
    x = layers.BatchNormalization(axis=-1)(x)
    x = layers.ReLU(6.0)(x)
    skip = x
    y = layers.DepthwiseConv2D(3, padding="same", data_format="channels_last")(x)
    x = layers.Add()([skip, y])
    x = layers.Multiply()([x, layers.Activation("sigmoid")(x)])
    pooled = layers.MaxPooling2D()(x)
    up = layers.Conv2DTranspose(8, 2, strides=2)(pooled)
    x = layers.concatenate([up, x])
    out = layers.Conv2D(2, 1, activation="softmax")(x)
    model = randomise_statistics(tinycnn.Model(inputs, out))
    proto = assert_exports(model, (16, 16, 3), tmp_path, name="functional")
    assert {"Concat", "ConvTranspose", "Softmax", "Add", "Mul"} <= op_types(proto)


class SubclassedNet(tinycnn.Model):
    """A hand-written forward: arithmetic, slicing, reshape, transposes and a residual, traced as it runs."""

    def __init__(self):
        super().__init__()
        self.conv = layers.Conv2D(6, 3, padding="same")
        self.bn = layers.BatchNormalization()
        self.head = layers.Dense(3)

    def forward(self, x):
        y = self.bn(self.conv(x))
        y = tinycnn.functional.relu6(y) * 0.5 + y[:, :, ::-1, :] - 1.0
        y = (y / 2.0).exp().sqrt() + y ** 2
        z = y.transpose(0, 2, 3, 1).reshape(x.shape[0], -1, 6).mean(axis=1)
        first_channel = y[:, 0].sum(axis=(1, 2)).reshape(x.shape[0], 1) * 0.01  # an integer index: squeezed
        return tinycnn.functional.log_softmax(self.head(z), dim=1) + z.max(axis=1, keepdims=True) + first_channel


def test_subclassed_module_traced(tmp_path):
    model = randomise_statistics(build(SubclassedNet(), (3, 8, 8)))
    proto = assert_exports(model, (3, 8, 8), tmp_path, input_shape=(3, 8, 8), name="subclassed")
    assert proto.graph.input[0].type.tensor_type.shape.dim[1].dim_value == 3  # NCHW, as a Module takes


# ---------------------------------------------------------------------- task models

def test_catdog_seed_and_strong(tmp_path):
    seed = build(seed_model(20, 1, 2), (1, 20, 20))
    proto = assert_exports(seed, (20, 20, 1), tmp_path, name="seed")
    assert op_types(proto) >= {"Conv", "MaxPool", "Gemm", "Sigmoid"}
    strong = randomise_statistics(build(strong_model(32, 3, 3), (3, 32, 32)))
    strong.metadata = {"task": "catdog", "img_size": 32, "grayscale": False, "class_names": ["a", "b", "c"]}
    proto = assert_exports(strong, (32, 32, 3), tmp_path, name="strong")
    assert "BatchNormalization" not in op_types(proto)  # folded into the convs (tinycnn/fuse.py)
    props = {p.key: p.value for p in proto.metadata_props}
    pre = json.loads(props["preprocessing"])
    assert pre["layout"] == "NHWC" and pre["colour_mode"] == "rgb" and pre["height"] == 32
    assert pre["class_names"] == ["a", "b", "c"] and pre["scale"] == pytest.approx(1 / 255)
    assert json.loads(props["class_names"]) == ["a", "b", "c"]


def test_plate_box_regressor(tmp_path):
    model = PlateBoxRegressor(width=0.25, head_channels=16)
    model = randomise_statistics(build(model, (3, 32, 32)))
    model.metadata = {"task": "plates_box", "img_size": 32}
    proto = assert_exports(model, (3, 32, 32), tmp_path, name="regressor")
    kinds = op_types(proto)
    assert {"Clip", "Add"} <= kinds and "BatchNormalization" not in kinds
    assert any(a.name == "group" and a.i > 1 for n in proto.graph.node if n.op_type == "Conv" for a in n.attribute)
    assert json.loads({p.key: p.value for p in proto.metadata_props}["preprocessing"])["resize"] == "letterbox"


@pytest.mark.parametrize("upsample", ["transpose", "bilinear"])
def test_plate_segmenter(upsample, tmp_path):
    model = randomise_statistics(build(PlateSegmenter(filters=4, depth=2, upsample=upsample), (3, 16, 16)))
    model.metadata = {"task": "plates_seg", "img_size": 16}
    proto = assert_exports(model, (3, 16, 16), tmp_path, name=f"unet_{upsample}")
    assert {"Concat", "Softmax", "ConvTranspose" if upsample == "transpose" else "Resize"} <= op_types(proto)


@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
def test_mobilenet_v2(layout, tmp_path):
    from tinycnn.applications import MobileNetV2
    model = randomise_statistics(MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, classes=5, layout=layout))
    proto = assert_exports(model, (32, 32, 3), tmp_path, name=f"mobilenet_v2_{layout}")
    assert {"Clip", "Add", "Pad", "Gemm", "Softmax"} <= op_types(proto)
    assert "BatchNormalization" not in op_types(proto)  # folded into the convs (tinycnn/onnx/fold.py)
    transposes = sum(node.op_type == "Transpose" for node in proto.graph.node)
    assert transposes <= 2 + 2 * 4  # in and out, and around the 4 channels-last paddings of stride-2 blocks


def test_plate_detector(tmp_path):
    detect = pytest.importorskip("tasks.plates_detect")  # the CenterNet-style detector, where it has landed
    model = randomise_statistics(build(detect.PlateCenterNet(width=0.25, neck=8), (3, 32, 32)))
    model.metadata = {"task": "plates_box", "img_size": 32}
    proto = assert_exports(model, (3, 32, 32), tmp_path, input_shape=(3, 32, 32), name="detector")
    assert {"Concat", "Resize", "Add"} <= op_types(proto)  # the neck's upsampling: Resize with scales (1, 2, 2, 1)


# ---------------------------------------------------------------------- refusals and options

class Cube(Function):
    """A user's op with no ONNX form."""

    def forward(self, x):
        return x * x * x

    def backward(self, g):
        return g


class CubeLayer(layers.Layer):
    def forward(self, x):
        return Cube.apply(x)


def test_unsupported_op_is_one_line_naming_layer_and_op(tmp_path):
    model = tinycnn.Sequential([layers.Conv2D(2, 1, input_shape=(6, 6, 1)), CubeLayer(name="cuber")])
    with pytest.raises(ExportError) as raised:
        export(model, tmp_path / "x.onnx")
    message = str(raised.value)
    assert "\n" not in message and "cuber" in message and "Cube" in message and "CubeLayer" in message


def test_fixed_batch_and_opset(tmp_path):
    model = build(strong_model(16, 1, 2), (1, 16, 16))
    path = tmp_path / "fixed.onnx"
    export(model, path, opset=18, dynamic_batch=False)
    proto = onnx.load(str(path))
    assert proto.opset_import[0].version == 18
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    x = np.random.default_rng(0).random((1, 16, 16, 1)).astype(np.float32)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert np.abs(got - model.predict(x)).max() <= TOLERANCE
    with pytest.raises(ExportError, match="opset"):
        export(model, path, opset=9)


def test_unknown_input_shape_is_asked_for_or_read_from_metadata(tmp_path):
    model = PlateBoxRegressor(width=0.25, head_channels=16)
    with pytest.raises(ExportError, match="input_shape"):
        export(model, tmp_path / "x.onnx")
    model.metadata = {"task": "plates-box", "img_size": 32}  # what a trained plate model's file carries
    export(model, tmp_path / "x.onnx")
    dims = onnx.load(str(tmp_path / "x.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["N", 3, 32, 32]


def test_command_line_exports_a_model_file(tmp_path, capsys):
    from tinycnn.export import main
    model = build(strong_model(16, 3, 2), (3, 16, 16))
    model.metadata = {"task": "catdog", "img_size": 16, "grayscale": False, "class_names": ["cat", "dog"]}
    model.compile(loss="binary_crossentropy", optimizer="adam")
    model.save(str(tmp_path / "best.tcnn"))
    assert main([str(tmp_path), str(tmp_path / "m.onnx")]) == 0  # a run folder stands for its best.tcnn
    x = np.random.default_rng(0).random((2, 16, 16, 3)).astype(np.float32)
    got = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert np.abs(got - model.predict(x)).max() <= TOLERANCE
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert json.loads(props["preprocessing"])["class_names"] == ["cat", "dog"]


class NumpyInside(tinycnn.Module):
    """A forward that leaves tinycnn's ops: the tensor it makes from NumPy is invisible to a trace."""

    def forward(self, x):
        return x + tinycnn.Tensor(np.tanh(x.numpy()).mean(axis=0))


def test_values_computed_outside_the_ops_are_refused(tmp_path):
    with pytest.raises(ExportError, match="outside tinycnn's ops"):
        export(NumpyInside(), tmp_path / "x.onnx", input_shape=(2, 4, 4))


@pytest.mark.parametrize("opset", [13, 18, 21])
def test_opsets(opset, tmp_path):
    """ReduceSum/ReduceMax take their axes as an input or an attribute, Resize its sizes, Clip its bounds:
    each opset's form gives the same values."""
    model = randomise_statistics(build(SubclassedNet(), (3, 8, 8)))
    path = tmp_path / f"opset{opset}.onnx"
    export(model, path, input_shape=(3, 8, 8), opset=opset)
    x = np.random.default_rng(0).random((2, 3, 8, 8)).astype(np.float32)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert np.abs(got - forward(model, x)).max() <= TOLERANCE
    assert onnx.load(str(path)).opset_import[0].version == opset


def test_command_line_takes_the_size_from_a_plate_model_file(tmp_path):
    from tinycnn.export import main
    model = randomise_statistics(build(PlateBoxRegressor(width=0.25, head_channels=16), (3, 32, 32)))
    model.metadata = {"task": "plates-box", "img_size": 32}
    model.build_input_shape = (3, 32, 32)  # as fit records it: load_model builds the layers from it
    model.compile(loss="mse", optimizer="adam")
    model.save(str(tmp_path / "best.tcnn"))
    assert main([str(tmp_path / "best.tcnn"), str(tmp_path / "m.onnx")]) == 0
    x = np.random.default_rng(0).random((2, 3, 32, 32)).astype(np.float32)  # NCHW, as the plate model takes
    got = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert np.abs(got - model.predict(x)).max() <= TOLERANCE


def test_several_inputs_are_refused(tmp_path):
    a, b = tinycnn.Input((4, 4, 2)), tinycnn.Input((4, 4, 2))
    model = tinycnn.Model([a, b], layers.Add()([a, b]))
    with pytest.raises(ExportError, match="2 inputs"):
        export(model, tmp_path / "x.onnx")


def test_flat_inputs(tmp_path):
    model = build(tinycnn.Sequential([layers.Dense(4, activation="tanh"), layers.Dense(2)]), (6,))
    proto = assert_exports(model, (6,), tmp_path, input_shape=(6,), name="dense_only")
    assert json.loads({p.key: p.value for p in proto.metadata_props}["preprocessing"])["layout"] == "flat"

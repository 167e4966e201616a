"""tinycnn.convert: a torchvision-named MobileNetV2 state dict (real names and shapes, built here from NumPy
arrays as torchvision's architecture makes them) and a Keras weights file (h5py) load into
applications.MobileNetV2 with every tensor placed; a tensor that does not fit is named with both shapes."""
import numpy as np
import pytest

from tinycnn.applications import MobileNetV2
from tinycnn.convert import ConversionError, load_keras, load_torchvision, main

ALPHA, SIDE, CLASSES = 0.35, 33, 7
# torchvision.models.mobilenetv2's table: t, c, n, s
TORCHVISION_SETTING = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1],
                       [6, 160, 3, 2], [6, 320, 1, 1]]


def divisible(v, divisor=8):
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def torchvision_state(width=ALPHA, classes=CLASSES, seed=0):
    """{name: array} with the names and shapes torchvision.models.mobilenet_v2(width_mult=width) has."""
    rng = np.random.default_rng(seed)
    state = {}

    def conv(name, shape):
        state[f"{name}.weight"] = rng.normal(0, 0.3, shape).astype(np.float32)

    def bn(name, channels):
        state[f"{name}.weight"] = rng.uniform(0.5, 1.5, channels).astype(np.float32)
        state[f"{name}.bias"] = rng.normal(0, 0.1, channels).astype(np.float32)
        state[f"{name}.running_mean"] = rng.normal(0, 0.1, channels).astype(np.float32)
        state[f"{name}.running_var"] = rng.uniform(0.5, 1.5, channels).astype(np.float32)
        state[f"{name}.num_batches_tracked"] = np.array(7, np.int64)

    channels = divisible(32 * width)
    conv("features.0.0", (channels, 3, 3, 3))
    bn("features.0.1", channels)
    index = 1
    for t, c, n, _ in TORCHVISION_SETTING:
        out = divisible(c * width)
        for _ in range(n):
            hidden, prefix, layer = channels * t, f"features.{index}.conv", 0
            if t != 1:
                conv(f"{prefix}.0.0", (hidden, channels, 1, 1))
                bn(f"{prefix}.0.1", hidden)
                layer = 1
            conv(f"{prefix}.{layer}.0", (hidden, 1, 3, 3))
            bn(f"{prefix}.{layer}.1", hidden)
            conv(f"{prefix}.{layer + 1}", (out, hidden, 1, 1))
            bn(f"{prefix}.{layer + 2}", out)
            channels, index = out, index + 1
    last = divisible(1280 * max(1.0, width))
    conv(f"features.{index}.0", (last, channels, 1, 1))
    bn(f"features.{index}.1", last)
    state["classifier.1.weight"] = rng.normal(0, 0.1, (classes, last)).astype(np.float32)
    state["classifier.1.bias"] = rng.normal(0, 0.1, classes).astype(np.float32)
    return state


def small_model(**kwargs):
    return MobileNetV2(input_shape=(SIDE, SIDE, 3), alpha=ALPHA, classes=CLASSES, **kwargs)


def test_torchvision_state_dict_places_every_tensor():
    state = torchvision_state()
    model = load_torchvision(small_model(), state)
    ours = model.state_dict()
    given = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert len(ours) == len(given) == 262  # torchvision's 314 entries less its 52 batch counters
    # every model tensor holds exactly one torchvision tensor (the random values are all distinct)
    by_bytes = {v.tobytes(): k for k, v in given.items()}
    assert len(by_bytes) == len(given)
    origin = {name: by_bytes.get(array.tobytes()) for name, array in ours.items()}
    assert None not in origin.values() and len(set(origin.values())) == len(given)
    for theirs, mine in [("features.0.0.weight", "Conv1.kernel"), ("features.0.1.weight", "bn_Conv1.gamma"),
                         ("features.1.conv.0.0.weight", "expanded_conv_depthwise.kernel"),
                         ("features.1.conv.1.weight", "expanded_conv_project.kernel"),
                         ("features.2.conv.0.0.weight", "block_1_expand.kernel"),
                         ("features.2.conv.1.1.running_mean", "block_1_depthwise_BN.moving_mean"),
                         ("features.17.conv.3.bias", "block_16_project_BN.beta"),
                         ("features.18.1.running_var", "Conv_1_bn.moving_variance"),
                         ("classifier.1.weight", "predictions.kernel"), ("classifier.1.bias", "predictions.bias")]:
        assert origin[mine] == theirs
    assert all(layer.epsilon == 1e-5 for layer in model.layers if hasattr(layer, "epsilon"))


def test_torchvision_without_top_skips_the_classifier():
    model = load_torchvision(MobileNetV2(input_shape=(SIDE, SIDE, 3), alpha=ALPHA, include_top=False),
                             torchvision_state())
    assert "predictions.kernel" not in model.state_dict()


def test_torchvision_shape_mismatch_names_tensor_and_shapes():
    state = torchvision_state()
    right = state["features.3.conv.1.0.weight"].shape
    state["features.3.conv.1.0.weight"] = np.zeros((5, 1, 3, 3), np.float32)
    with pytest.raises(ConversionError) as raised:
        load_torchvision(small_model(), state)
    message = str(raised.value)
    assert "'features.3.conv.1.0.weight'" in message and "'block_2_depthwise.kernel'" in message
    assert "(5, 1, 3, 3)" in message and str(right) in message and "\n" not in message


def test_torchvision_missing_and_unknown_tensors():
    state = torchvision_state()
    state.pop("features.5.conv.1.0.weight")
    with pytest.raises(ConversionError, match="block_4_depthwise.kernel"):
        load_torchvision(small_model(), state)
    state = torchvision_state()
    state["features.99.weight"] = np.zeros(1, np.float32)
    with pytest.raises(ConversionError, match="features.99.weight"):
        load_torchvision(small_model(), state)


def keras_file(path, model, legacy=False, seed=1):
    """A Keras weights file for `model`'s layers, in Keras' layouts; -> {tinycnn name: expected array}."""
    h5py = pytest.importorskip("h5py")
    from tinycnn import layers
    rng = np.random.default_rng(seed)
    expected = {}
    with h5py.File(path, "w") as f:
        for layer in model.layers:
            weights = []
            if isinstance(layer, layers.BatchNormalization):
                weights = [(n, rng.uniform(0.5, 1.5, layer.gamma.shape).astype(np.float32))
                           for n in ("gamma", "beta", "moving_mean", "moving_variance")]
            elif isinstance(layer, layers.DepthwiseConv2D):
                c, _, kh, kw = layer.kernel.shape
                keras = rng.normal(size=(kh, kw, c, 1)).astype(np.float32)
                weights = [("depthwise_kernel", keras)]
                expected[f"{layer.name}.kernel"] = keras[:, :, :, 0].transpose(2, 0, 1)[:, None]
            elif isinstance(layer, layers.Conv2D):
                f_, c, kh, kw = layer.kernel.shape
                keras = rng.normal(size=(kh, kw, c, f_)).astype(np.float32)
                weights = [("kernel", keras)]
                expected[f"{layer.name}.kernel"] = np.einsum("ijcf->fcij", keras)
            elif isinstance(layer, layers.Dense):
                keras = rng.normal(size=layer.kernel.shape[::-1]).astype(np.float32)
                weights = [("kernel", keras), ("bias", rng.normal(size=layer.bias.shape).astype(np.float32))]
                expected[f"{layer.name}.kernel"] = keras.T
            for i, (name, array) in enumerate(weights):
                key = f"{layer.name}/{layer.name}/{name}:0" if legacy else f"layers/{layer.name}/vars/{i}"
                f.create_dataset(key, data=array)
                if layer.name + "." + {"depthwise_kernel": "kernel"}.get(name, name) not in expected:
                    expected[f"{layer.name}.{ {'depthwise_kernel': 'kernel'}.get(name, name)}"] = array
    return expected


@pytest.mark.parametrize("legacy", [False, True])
def test_keras_weights_transposed_into_place(legacy, tmp_path):
    model = small_model()
    expected = keras_file(tmp_path / "m.weights.h5", model, legacy)
    load_keras(model, tmp_path / "m.weights.h5")
    ours = model.state_dict()
    assert set(expected) == set(ours)
    for name, array in expected.items():
        assert np.array_equal(ours[name], array), name


def test_keras_shape_mismatch_names_tensor(tmp_path):
    h5py = pytest.importorskip("h5py")
    model = small_model()
    keras_file(tmp_path / "m.weights.h5", model)
    with h5py.File(tmp_path / "m.weights.h5", "a") as f:
        del f["layers/block_2_depthwise/vars/0"]
        f["layers/block_2_depthwise/vars/0"] = np.zeros((3, 3, 5, 1), np.float32)
    with pytest.raises(ConversionError) as raised:
        load_keras(model, tmp_path / "m.weights.h5")
    message = str(raised.value)
    assert "'block_2_depthwise/0'" in message and "(5, 1, 3, 3)" in message
    assert str(model.get_layer("block_2_depthwise").kernel.shape) in message


def test_command_line_writes_a_model_file(tmp_path, capsys):
    pytest.importorskip("safetensors")
    from safetensors.numpy import save_file

    import tinycnn
    save_file(torchvision_state(), str(tmp_path / "tv.safetensors"))
    out = tmp_path / "mnv2.tcnn"
    assert main([str(tmp_path / "tv.safetensors"), str(out), "--input-shape", f"{SIDE},{SIDE},3",
                 "--alpha", str(ALPHA), "--classes", str(CLASSES)]) == 0
    loaded = tinycnn.load_model(str(out), compile=False)
    assert np.array_equal(loaded.state_dict()["Conv1.kernel"], torchvision_state()["features.0.0.weight"])
    assert MobileNetV2(input_shape=(SIDE, SIDE, 3), alpha=ALPHA, classes=CLASSES, weights=str(out)) is not None


def test_backbone_of_the_plate_models_from_mobilenet():
    from tasks.plates_models import PlateBoxRegressor
    from tinycnn.convert import backbone_pairs, fill_backbone
    state = torchvision_state()
    mobilenet = load_torchvision(MobileNetV2(input_shape=(SIDE, SIDE, 3), alpha=ALPHA, include_top=False), state)
    model = PlateBoxRegressor(width=ALPHA)
    model.build_input_shape = (3, 32, 32)
    model._ensure_built()
    before = model.state_dict()
    copied, kept = fill_backbone(model, mobilenet)
    pairs = {mine: theirs for mine, theirs, _ in backbone_pairs(model, mobilenet)}
    # blocks (t, c, s): (1,16,1) (6,24,2) (6,24,1) (6,32,2) (6,64,2) find MobileNetV2's blocks 0, 1, 2, 3 and 6;
    # the (6,128,1) block has no counterpart and keeps its own weights, as do the head and the dense layer
    assert pairs["stem"] == "Conv1" and pairs["features.0.depthwise"] == "expanded_conv_depthwise"
    assert pairs["features.3.expand"] == "block_3_expand" and pairs["features.4.project"] == "block_6_project"
    assert not any(name.startswith("features.5") for name in pairs)
    after = model.state_dict()
    assert np.array_equal(after["features.4.expand.conv.kernel"], state["features.7.conv.0.0.weight"])
    assert np.array_equal(after["features.4.expand.bn.moving_variance"], state["features.7.conv.0.1.running_var"])
    assert np.array_equal(after["stem.bn.gamma"], state["features.0.1.weight"])
    for name in kept:
        assert np.array_equal(after[name], before[name]), name
    assert "features.5.expand.conv.kernel" in kept and "box.kernel" in kept and len(copied) == 15 * 5


def test_command_line_writes_a_plate_init_folder(tmp_path):
    pytest.importorskip("safetensors")
    from safetensors.numpy import save_file

    import tinycnn
    save_file(torchvision_state(), str(tmp_path / "tv.safetensors"))
    assert main([str(tmp_path / "tv.safetensors"), str(tmp_path / "init"), "--for", "plates-box", "--head",
                 "global", "--alpha", str(ALPHA), "--input-shape", f"{SIDE},{SIDE},3"]) == 0
    model = tinycnn.load_model(str(tmp_path / "init" / "best.tcnn"), compile=False)
    assert type(model).__name__ == "PlateBoxRegressor"
    assert np.array_equal(model.state_dict()["stem.conv.kernel"], torchvision_state()["features.0.0.weight"])


def test_pth_without_torch_says_what_to_do(tmp_path):
    try:
        import torch  # noqa: F401
        pytest.skip("torch is installed here: a .pth is read")
    except ImportError:
        pass
    from tinycnn.convert import read_state
    (tmp_path / "m.pth").write_bytes(b"")
    with pytest.raises(ConversionError, match="needs torch.*safetensors"):
        read_state(tmp_path / "m.pth")


def test_keras_file_through_the_command_line(tmp_path):
    pytest.importorskip("h5py")
    expected = keras_file(tmp_path / "m.weights.h5", small_model())
    out = tmp_path / "k.safetensors"
    assert main([str(tmp_path / "m.weights.h5"), str(out), "--input-shape", f"{SIDE},{SIDE},3", "--alpha",
                 str(ALPHA), "--classes", str(CLASSES)]) == 0
    model = small_model()
    model.load_weights(out)
    assert np.array_equal(model.state_dict()["block_3_depthwise.kernel"], expected["block_3_depthwise.kernel"])

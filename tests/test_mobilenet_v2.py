"""tinycnn.applications.MobileNetV2: Keras' parameter counts and layer names, shapes at a small input, the
tutorial's plate model built on it, a few training steps, weights from a file, and the refusals."""
import numpy as np
import pytest

import tinycnn
from tinycnn import layers
from tinycnn.applications import MobileNetV2
from tinycnn.applications.mobilenet_v2 import correct_pad, make_divisible


def test_parameter_counts_match_keras_at_224():
    """Keras' model.count_params(): 2,257,984 without the top, 3,538,984 with it (moving statistics included,
    34,112 of them non-trainable)."""
    base = MobileNetV2(input_shape=(224, 224, 3), include_top=False)
    assert base.count_params() == 2_257_984
    assert base.output.shape == (None, 7, 7, 1280)
    full = MobileNetV2(input_shape=(224, 224, 3))
    assert full.count_params() == 3_538_984
    assert full.output.shape == (None, 1000)
    moving = sum(b.size for _, b in full.named_buffers())
    assert moving == 34_112 and sum(p.size for p in full.parameters()) == 3_538_984 - 34_112


def test_layer_names_and_weight_shapes_are_keras():
    model = MobileNetV2(input_shape=(32, 32, 3), include_top=True, classes=10)
    names = [layer.name for layer in model.layers]
    for name in ["Conv1", "bn_Conv1", "Conv1_relu", "expanded_conv_depthwise", "expanded_conv_project_BN",
                 "block_1_expand", "block_1_expand_BN", "block_1_pad", "block_1_depthwise", "block_2_add",
                 "block_16_project", "Conv_1", "Conv_1_bn", "out_relu", "predictions"]:
        assert name in names
    state = model.state_dict()
    assert state["Conv1.kernel"].shape == (32, 3, 3, 3)
    assert state["block_1_expand.kernel"].shape == (96, 16, 1, 1)
    assert state["block_1_depthwise.kernel"].shape == (96, 1, 3, 3)
    assert state["block_1_project.kernel"].shape == (24, 96, 1, 1)
    assert state["block_1_expand_BN.moving_variance"].shape == (96,)
    assert state["predictions.kernel"].shape == (10, 1280)
    assert not any(name.startswith("block_1_add") for name in names)  # 16 -> 24 channels: no residual


def test_keras_helpers():
    assert [make_divisible(v) for v in (32 * 0.35, 16 * 0.5, 1280 * 1.3, 96 * 0.75)] == [16, 8, 1664, 72]
    assert correct_pad((112, 112)) == ((0, 1), (0, 1)) and correct_pad((7, 9)) == ((1, 1), (1, 1))


def test_alpha_and_pooling():
    small = MobileNetV2(input_shape=(64, 64, 3), alpha=0.35, include_top=False, pooling="avg")
    assert small.output.shape == (None, 1280)
    assert small.get_layer("Conv1").filters == 16
    assert MobileNetV2(input_shape=(64, 48, 3), include_top=False, pooling="max").output.shape == (None, 1280)
    assert MobileNetV2(input_shape=(64, 48, 3), include_top=False).output.shape == (None, 2, 2, 1280)


def test_plate_model_on_the_base_trains_and_predicts():
    """The tutorial's plate regressor: the base's output, pooled, into Dense(4, sigmoid), as a new Model."""
    tinycnn.manual_seed(0)
    base = MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, include_top=False)
    x = layers.GlobalAveragePooling2D()(base.output)
    out = layers.Dense(4, activation="sigmoid")(x)
    model = tinycnn.Model(base.input, out)
    assert model.count_params() == base.count_params() + 1280 * 4 + 4
    rng = np.random.default_rng(0)
    images = rng.random((8, 32, 32, 3)).astype(np.float32)
    boxes = rng.random((8, 4)).astype(np.float32)
    model.compile(loss="mse", optimizer=tinycnn.optimizers.Adam(1e-3))
    before = [p.numpy().copy() for p in model.parameters()]
    history = model.fit(images, boxes, batch_size=4, epochs=2, verbose=0)
    assert all(np.isfinite(history.history["loss"]))
    assert any(not np.array_equal(a, p.numpy()) for a, p in zip(before, model.parameters()))
    prediction = model.predict(images[:3])
    assert prediction.shape == (3, 4) and np.all((prediction > 0) & (prediction < 1))


def test_weights_from_a_file_and_imagenet_refused(tmp_path):
    model = MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, classes=3)
    model.save(tmp_path / "mnv2.tcnn")
    again = MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, classes=3, weights=str(tmp_path / "mnv2.tcnn"))
    x = np.random.default_rng(1).random((2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(again.predict(x), model.predict(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="downloads nothing.*weights='path/to/file'"):
        MobileNetV2(weights="imagenet")
    with pytest.raises(ValueError, match="do not fit"):
        MobileNetV2(input_shape=(32, 32, 3), alpha=0.5, classes=3, weights=str(tmp_path / "mnv2.tcnn"))
    with pytest.raises(FileNotFoundError):
        MobileNetV2(weights=str(tmp_path / "missing.tcnn"))


def test_channels_last_and_channels_first_layouts_agree():
    """The default runs its convs on NHWC maps (one transpose in, one out); the NCHW build with the same
    weights gives the same outputs, in training mode (batch statistics) too, and the same gradients."""
    tinycnn.manual_seed(2)
    last = MobileNetV2(input_shape=(64, 64, 3), alpha=0.35, classes=5, classifier_activation=None)
    first = MobileNetV2(input_shape=(64, 64, 3), alpha=0.35, classes=5, classifier_activation=None,
                        layout="channels_first")
    first.load_state_dict(last.state_dict())
    assert last.get_layer("block_1_depthwise").data_format == "channels_last"
    x = np.random.default_rng(2).random((4, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(last.predict(x), first.predict(x), rtol=1e-3, atol=1e-4)
    inputs = tinycnn.Tensor(x.transpose(0, 3, 1, 2).copy())
    outputs = []
    for model in (last, first):
        model.train()
        model.zero_grad()
        out = model(inputs)
        (out * out).sum().backward()
        outputs.append((out.numpy(), model.get_layer("block_2_expand").kernel.grad.copy()))
    np.testing.assert_allclose(outputs[0][0], outputs[1][0], rtol=1e-3, atol=1e-4)
    scale = np.abs(outputs[1][1]).max()  # float32 sums in another order, through 50 layers and batch norms
    np.testing.assert_allclose(outputs[0][1], outputs[1][1], rtol=1e-2, atol=1e-3 * scale)

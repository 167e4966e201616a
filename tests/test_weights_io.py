"""Weights files (tinycnn/weights.py): a safetensors round trip gives the same predictions, every tensor placed
by name; a file that does not fit names the tensor and both shapes, or the missing and unexpected names."""
import numpy as np
import pytest

import tinycnn
from tinycnn import layers

pytest.importorskip("safetensors")
from tinycnn.weights import WeightsError, load_state  # noqa: E402


def small_net(seed):
    tinycnn.manual_seed(seed)
    return tinycnn.Sequential([
        layers.Conv2D(4, 3, use_bias=False, input_shape=(10, 10, 3)), layers.BatchNormalization(),
        layers.ReLU(), layers.GlobalAveragePooling2D(), layers.Dense(2, activation="softmax")])


def test_round_trip_same_names_arrays_and_predictions(tmp_path):
    source, target = small_net(0), small_net(1)
    x = np.random.default_rng(0).random((3, 10, 10, 3)).astype(np.float32)
    source._ensure_built()
    source.layers[1].moving_mean.data[...] = 0.3  # a buffer too, not only parameters
    source.layers[1].moving_mean.bump_version()
    before_target = target.predict(x)  # the target's inference form is cached now: loading must refresh it
    path = tmp_path / "w.safetensors"
    source.save_weights(path)
    target.load_weights(path)
    for (name, a), (other, b) in zip(sorted(source.state_dict().items()), sorted(target.state_dict().items())):
        assert name == other and np.array_equal(a, b)
    assert np.array_equal(target.predict(x), source.predict(x))
    assert not np.allclose(before_target, target.predict(x))


def test_names_follow_the_module_paths(tmp_path):
    from safetensors.numpy import load_file
    model = small_net(0)
    model.save_weights(tmp_path / "w.safetensors")
    names = set(load_file(str(tmp_path / "w.safetensors")))
    assert names == set(model.state_dict())
    assert "layers.1.moving_variance" in names and "layers.0.kernel" in names


def test_shape_mismatch_names_tensor_and_both_shapes():
    model = small_net(0)
    model._ensure_built()
    state = model.state_dict()
    state["layers.4.kernel"] = np.zeros((3, 4), np.float32)
    with pytest.raises(WeightsError) as raised:
        load_state(model, state)
    message = str(raised.value)
    assert "layers.4.kernel" in message and "(3, 4)" in message and "(2, 4)" in message and "\n" not in message


def test_missing_and_unexpected_names_are_listed():
    model = small_net(0)
    model._ensure_built()
    state = model.state_dict()
    state.pop("layers.0.kernel")
    state["extra.weight"] = np.zeros(1, np.float32)
    with pytest.raises(WeightsError, match=r"missing layers\.0\.kernel; unexpected extra\.weight"):
        load_state(model, state)


def test_wrong_suffix_and_missing_file(tmp_path):
    model = small_net(0)
    with pytest.raises(WeightsError, match="safetensors"):
        model.save_weights(tmp_path / "w.h5")
    with pytest.raises(FileNotFoundError):
        model.load_weights(tmp_path / "none.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match="bad.safetensors"):
        model.load_weights(tmp_path / "bad.safetensors")

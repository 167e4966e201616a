"""The inference pass (tinycnn/fuse.py): which layers it fuses, the same outputs as the layers run one by one,
and its cache, kept while the weights stay and rebuilt when they change (optimizer step, loaded weights,
batch-norm statistics, a layer added)."""
import numpy as np
import pytest

import tinycnn
from tinycnn import fuse, layers
from tinycnn.ops.batchnorm import BatchNorm, fold_into_conv


def _net():
    """Conv + BN + ReLU, conv (ReLU) + 2×2 max-pool, BN + ReLU6, Flatten, Dense: every fusion once."""
    tinycnn.manual_seed(1)
    return tinycnn.Sequential([
        layers.Conv2D(4, 3, padding="same", input_shape=(8, 8, 2)), layers.BatchNormalization(), layers.ReLU(),
        layers.Conv2D(6, 3, activation="relu"), layers.MaxPooling2D(2),
        layers.BatchNormalization(), layers.ReLU(6.0),
        layers.Flatten(), layers.Dense(3)])


def _layer_by_layer(model, x):
    """The model's layers run one at a time, in eval mode, each on its own (no step fused)."""
    was_training = model.training
    model.eval()
    with tinycnn.no_grad():
        out = tinycnn.Tensor(x.transpose(0, 3, 1, 2).copy())
        for layer in model.layers:
            out = layer(out)
    model.train(was_training)
    return out.numpy()


@pytest.fixture
def folds(monkeypatch):
    calls = []
    monkeypatch.setattr(fuse, "fold_into_conv", lambda *a: calls.append(a) or fold_into_conv(*a))
    return calls


def _fit_once(model, x, y):
    model.compile(loss="mse", optimizer="sgd")
    model.fit(x, y, epochs=1, batch_size=len(x), verbose=0)


def test_steps_and_outputs():
    model, x = _net(), np.random.default_rng(0).uniform(size=(5, 8, 8, 2)).astype(np.float32)
    _fit_once(model, x, np.zeros((5, 3), np.float32))  # batch norm statistics away from their start
    steps = fuse.inference_form(model)._steps
    assert [type(s) for s in steps] == [fuse.FoldedConv, fuse.ConvReLUMaxPool, fuse.BatchNormActivation,
                                        layers.Flatten, layers.Dense]
    assert steps[0].activation == "relu" and steps[2].activation == "relu6"
    np.testing.assert_allclose(model.predict(x), _layer_by_layer(model, x), rtol=1e-4, atol=1e-5)
    assert model.evaluate(x, np.zeros((5, 3), np.float32)) == pytest.approx(
        [float(np.mean(_layer_by_layer(model, x) ** 2))], rel=1e-4)


def test_a_sequential_first_built_by_predict_builds_through_its_inference_form(monkeypatch):
    """predict on a Sequential not built yet builds it by a forward of its inference form (conv → ReLU → 2×2
    max-pool fused before any weight exists: the unfused max pool never runs); the weights and outputs are the
    same as when fit's forward builds it."""
    x = np.random.default_rng(0).uniform(size=(3, 8, 8, 2)).astype(np.float32)
    reference = _net()
    reference._ensure_built()  # fit's path: the layers one by one
    pooled = []
    real_pool = layers.MaxPooling2D.forward
    monkeypatch.setattr(layers.MaxPooling2D, "forward", lambda self, x: pooled.append(1) or real_pool(self, x))
    model = _net()
    out = model.predict(x)
    weighted = [layer for layer, built in zip(model.layers, reference.layers) if list(built.parameters())]
    assert not pooled and len(weighted) == 5 and all(layer.built for layer in weighted)
    for got, want in zip(model.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(out, reference.predict(x))
    assert not pooled


class _Scaled(layers.Layer):
    """A layer with a sub-layer and a weight of its own: the inference form copies it (fuse.py)."""

    def __init__(self):
        super().__init__()
        self.inner = layers.Dense(3)

    def build(self, shape):
        self.scale = tinycnn.Parameter(np.full(3, 2.0, np.float32))

    def forward(self, x):
        return self.inner(x) * self.scale


def test_a_sequential_with_a_composite_layer_builds_layer_by_layer():
    """A layer with sub-modules is copied into the inference form, so weights it built there would not be the
    model's: such a Sequential builds by its layers' own forward, and predict keeps every weight."""
    model = tinycnn.Sequential([layers.Flatten(input_shape=(4, 4, 1)), _Scaled(), layers.Dense(2)])
    assert not model.builds_through_inference_form
    model.predict(np.ones((2, 4, 4, 1), np.float32))
    assert model.layers[1].built and len(model.get_weights()) == 5


def test_an_input_too_small_for_the_fused_pool_names_the_pool():
    """Building through the inference form, an input too small for the 2×2 pool after the conv fails with the
    pool layer's own error, as the layers one by one would."""
    model = tinycnn.Sequential([layers.Conv2D(4, 3, activation="relu", input_shape=(3, 3, 1), name="c"),
                                layers.MaxPooling2D(2, name="p")])
    with pytest.raises(ValueError, match="layer 'p'"):
        model.predict(np.ones((1, 3, 3, 1), np.float32))


def test_a_folded_conv_with_relu_takes_the_pooling_after_it():
    """conv → batch norm → ReLU → 2×2 max-pool (the strong cat/dog net's blocks): one pooled op with the folded
    weights; a pooling of another size, or after ReLU6, stays a step of its own."""
    tinycnn.manual_seed(2)
    model = tinycnn.Sequential([
        layers.Conv2D(4, 3, padding="same", use_bias=False, input_shape=(9, 9, 3)), layers.BatchNormalization(),
        layers.Activation("relu"), layers.MaxPooling2D(2),
        layers.Conv2D(5, 3, padding="same"), layers.BatchNormalization(), layers.ReLU(6.0), layers.MaxPooling2D(2),
        layers.Conv2D(6, 1), layers.BatchNormalization(activation="relu"), layers.MaxPooling2D(1),
        layers.Flatten(), layers.Dense(2)])
    x = np.random.default_rng(0).uniform(size=(3, 9, 9, 3)).astype(np.float32)
    _fit_once(model, x, np.zeros((3, 2), np.float32))
    steps = fuse.inference_form(model)._steps
    assert [type(s) for s in steps] == [fuse.ConvReLUMaxPool, fuse.FoldedConv, layers.MaxPooling2D, fuse.FoldedConv,
                                        layers.MaxPooling2D, layers.Flatten, layers.Dense]
    assert steps[0].folded is not None
    np.testing.assert_allclose(model.predict(x), _layer_by_layer(model, x), rtol=1e-4, atol=1e-5)


def test_training_fuses_batch_norm_and_relu(monkeypatch):
    """In training the Sequential runs batch norm + ReLU as one op with its backward (and no fold)."""
    model = _net()
    model._ensure_built()
    seen = []
    original = BatchNorm.forward
    monkeypatch.setattr(BatchNorm, "forward", lambda self, *a, **k: seen.append(k["activation"]) or original(self, *a, **k))
    out = model(tinycnn.Tensor(np.ones((2, 2, 8, 8), np.float32)))
    out.sum().backward()
    assert seen == ["relu", "relu6"]
    assert all(p.grad is not None for p in model.parameters())


def test_the_form_is_cached_until_a_weight_changes(folds):
    model, x = _net(), np.random.default_rng(1).uniform(size=(4, 8, 8, 2)).astype(np.float32)
    y = np.zeros((4, 3), np.float32)
    model.predict(x)
    form = fuse.inference_form(model)
    model.predict(x)
    assert fuse.inference_form(model) is form and len(folds) == 1

    _fit_once(model, x, y)  # optimizer step and new running statistics
    assert fuse.inference_form(model) is not form and len(folds) == 2
    np.testing.assert_allclose(model.predict(x), _layer_by_layer(model, x), rtol=1e-4, atol=1e-5)

    other = _net()
    other._ensure_built()
    model.load_state_dict(other.state_dict())
    np.testing.assert_allclose(model.predict(x), _layer_by_layer(other, x), rtol=1e-4, atol=1e-5)
    assert len(folds) == 3

    model.add(layers.Activation("tanh"))  # a new layer, without weights
    np.testing.assert_allclose(model.predict(x), np.tanh(_layer_by_layer(other, x)), rtol=1e-4, atol=1e-5)


def test_a_running_statistics_update_refolds(folds):
    model, x = _net(), np.random.default_rng(2).uniform(size=(4, 8, 8, 2)).astype(np.float32)
    before = model.predict(x)
    model.train()
    with tinycnn.no_grad():  # a forward in training mode moves the running statistics (no optimizer step)
        model(tinycnn.Tensor(x.transpose(0, 3, 1, 2).copy()))
    after = model.predict(x)
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, _layer_by_layer(model, x), rtol=1e-4, atol=1e-5)


def test_a_subclass_is_fused_only_when_it_declares_it():
    class Shifted(layers.Conv2D):
        def forward(self, x):
            return super().forward(x) + 1.0

    model = tinycnn.Sequential([Shifted(3, 1, input_shape=(4, 4, 2)), layers.BatchNormalization()])
    x = np.ones((1, 4, 4, 2), np.float32)
    model.predict(x)
    assert [type(s) for s in fuse.inference_form(model)._steps] == [Shifted, layers.BatchNormalization]
    np.testing.assert_allclose(model.predict(x), _layer_by_layer(model, x).transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-6)


def test_a_declared_group_in_a_module():
    """A hand-written Module's declared (conv, bn, activation) group: its forward runs unchanged on the form."""
    class Block(tinycnn.Model):
        fusable = (("conv", "bn", "act"),)

        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.act = layers.Conv2D(3, 3), layers.BatchNormalization(), layers.ReLU()
            self.head = layers.Conv2D(2, 1, activation="relu")

        def forward(self, x):
            return self.head(self.act(self.bn(self.conv(x))))

    tinycnn.manual_seed(3)
    block, x = Block(), np.random.default_rng(3).standard_normal((2, 2, 6, 6)).astype(np.float32)
    block.predict(x)  # builds the layers
    form = fuse.inference_form(block)
    assert isinstance(form.conv, fuse.FoldedConv) and isinstance(form.bn, fuse.Identity)
    assert form.head is block.head and block.conv.fuses_as == "conv"  # the model itself is unchanged
    block.eval()
    np.testing.assert_allclose(block.predict(x), block(tinycnn.Tensor(x)).numpy(), rtol=1e-4, atol=1e-5)

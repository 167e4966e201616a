"""Inference plans (tinycnn/plan.py): a replay gives the ordinary inference forward's outputs bit for bit, is
rebuilt for a new batch shape or new weights, and is not made for a pass that cannot be replayed."""
import numpy as np
import pytest

import tinycnn
from tinycnn import layers, plan
from tinycnn.fuse import inference_form
from tinycnn.tensor import Tensor


def _plans(model):
    return inference_form(model).__dict__.get("_inference_plans", {})


def _random_statistics(model, seed=0):
    """Batch norms with moving statistics and affine weights away from their initial values, so that the
    folds (fuse.py) that the plan captures are not the identity."""
    rng = np.random.default_rng(seed)
    for module in [m for _, m in model.named_modules()]:
        if isinstance(module, layers.BatchNormalization) and module.built:
            for name in ("moving_mean", "moving_variance", "gamma", "beta"):
                t = getattr(module, name, None)
                if t is not None:
                    values = rng.uniform(0.5, 1.5, t.shape) if name in ("moving_variance", "gamma") \
                        else rng.normal(0, 0.2, t.shape)
                    t.data[...] = values.astype(t.dtype)
                    t.bump_version()


def _check_replay(model, x, batch_size=None):
    """predict through a plan == predict through the ordinary inference forward, bit for bit, on two batches
    (the first call records the plan, the later ones replay it); returns the outputs."""
    batch_size = batch_size or len(x)
    with plan.plans_off():
        expected = model.predict(x, batch_size=batch_size)
    first = model.predict(x, batch_size=batch_size)
    replayed = model.predict(x, batch_size=batch_size)
    other = x[::-1].copy()
    with plan.plans_off():
        expected_other = model.predict(other, batch_size=batch_size)
    for want, got in ((expected, first), (expected, replayed), (expected_other, model.predict(other, batch_size))):
        for w, g in zip(want if isinstance(want, list) else [want], got if isinstance(got, list) else [got]):
            assert w.shape == g.shape and np.array_equal(w, g)
    assert _plans(model) and all(isinstance(p, plan.InferencePlan) for p in _plans(model).values())
    return replayed


def _images(shape, n=3, seed=1):
    return np.random.default_rng(seed).random((n,) + shape).astype(np.float32)


def test_tutorial_sequential_replays_bit_for_bit():
    from tasks.catdog import seed_model
    tinycnn.manual_seed(0)
    _check_replay(seed_model(32, 1, 2), _images((32, 32, 1)))


def test_strong_catdog_model_replays_bit_for_bit():
    from tasks.catdog import strong_model
    tinycnn.manual_seed(0)
    model = strong_model(32, 3, 3)
    model.predict(_images((32, 32, 3)))
    _random_statistics(model)
    _check_replay(model, _images((32, 32, 3)))


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_plate_regressor_replays_bit_for_bit(data_format):
    from tasks.plates_models import PlateBoxRegressor
    tinycnn.manual_seed(0)
    model = PlateBoxRegressor(width=0.5, data_format=data_format)
    model.predict(_images((3, 64, 64)))
    _random_statistics(model)
    _check_replay(model, _images((3, 64, 64)))


def test_plate_unet_replays_bit_for_bit():
    from tasks.plates_models import PlateSegmenter
    tinycnn.manual_seed(0)
    model = PlateSegmenter(filters=4, depth=2)
    model.predict(_images((3, 32, 32)))
    _random_statistics(model)
    _check_replay(model, _images((3, 32, 32)))


def test_plate_detector_replays_bit_for_bit():
    from tasks.plates_detect import PlateCenterNet
    tinycnn.manual_seed(0)
    model = PlateCenterNet(width=0.5, neck=16)
    model.predict(_images((3, 64, 64), n=2))
    _random_statistics(model)
    _check_replay(model, _images((3, 64, 64), n=2))


def test_functional_model_with_merges_and_two_outputs_replays_bit_for_bit():
    tinycnn.manual_seed(0)
    inputs = tinycnn.Input((16, 16, 3))
    a = layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    b = layers.Conv2D(8, 1)(inputs)
    merged = layers.Add()([a, b])
    joined = layers.Concatenate()([merged, a])
    pooled = layers.GlobalAveragePooling2D()(joined)
    model = tinycnn.Model(inputs, [layers.Dense(3, activation="softmax")(pooled), layers.Dense(1)(pooled)])
    out = _check_replay(model, _images((16, 16, 3)))
    assert isinstance(out, list) and [o.shape for o in out] == [(3, 3), (3, 1)]


def test_a_new_batch_shape_gets_its_own_plan_and_the_last_partial_batch_too():
    from tasks.catdog import seed_model
    tinycnn.manual_seed(0)
    model = seed_model(24, 1, 2)
    x = _images((24, 24, 1), n=10)
    _check_replay(model, x, batch_size=4)
    assert sorted(key[0][0][0] for key in _plans(model)) == [2, 4]  # batches of 4, 4, then 2
    _check_replay(model, x, batch_size=10)
    assert sorted(key[0][0][0] for key in _plans(model)) == [2, 4, 10]


def test_an_in_place_weight_change_rebuilds_the_plan():
    from tasks.plates_models import PlateBoxRegressor
    tinycnn.manual_seed(0)
    model = PlateBoxRegressor(width=0.35)
    x = _images((3, 32, 32))
    before = _check_replay(model, x)
    old_plan = next(iter(_plans(model).values()))
    conv = model.stem.conv
    conv.kernel.data *= 1.5  # in place: the same array
    conv.kernel.bump_version()
    after = _check_replay(model, x)
    assert next(iter(_plans(model).values())) is not old_plan
    assert not np.array_equal(before, after)


def test_the_plan_keeps_the_winograd_filters_and_an_in_place_weight_change_drops_them():
    """A replay keeps what the kernels derive from the weights (the Winograd filter transform of the tutorial
    net's 3x3 conv: kernels/cpu/workspace.py `prepared`), and a weight changed in place gets a new plan with a
    transform of the new weights: the same outputs as the ordinary forward."""
    from tasks.catdog import seed_model
    tinycnn.manual_seed(0)
    model = seed_model(32, 1, 2)
    x = _images((32, 32, 1))
    before = _check_replay(model, x)
    old_plan = next(iter(_plans(model).values()))
    assert any(key[0] == "winograd_filters" for key in old_plan._prepared)
    conv = [m for _, m in model.named_modules() if isinstance(m, layers.Conv2D)][1]  # 64 -> 64, 3x3: Winograd
    conv.kernel.data *= -1.5  # in place: the same array, the same address
    conv.kernel.bump_version()
    after = _check_replay(model, x)
    assert next(iter(_plans(model).values())) is not old_plan
    assert not np.array_equal(before, after)


def test_the_plan_keeps_the_channels_last_taps_and_an_in_place_weight_change_drops_them():
    """Channels-last convs re-lay their filters (taps last; a stride-1 depthwise conv's nine taps as (9, C)):
    a replay keeps them, and a depthwise weight changed in place gets a new plan with the new taps."""
    from tasks.plates_models import PlateBoxRegressor
    tinycnn.manual_seed(0)
    model = PlateBoxRegressor(width=0.5, data_format="channels_last")
    x = _images((3, 64, 64))
    model.predict(x)
    _random_statistics(model)
    before = _check_replay(model, x)
    old_plan = next(iter(_plans(model).values()))
    roles = {key[0] if isinstance(key[0], str) else key[0][0] for key in old_plan._prepared}
    assert {"taps_last", "nine_taps"} <= roles
    depthwise = [m for _, m in model.named_modules() if isinstance(m, layers.DepthwiseConv2D)][-1]
    depthwise.kernel.data *= -1.5
    depthwise.kernel.bump_version()
    after = _check_replay(model, x)
    assert next(iter(_plans(model).values())) is not old_plan
    assert not np.array_equal(before, after)


def test_an_optimizer_step_rebuilds_the_plan():
    from tasks.catdog import strong_model
    tinycnn.manual_seed(0)
    model = strong_model(16, 3, 2)
    model.compile(loss="binary_crossentropy", optimizer="adam")
    x, y = _images((16, 16, 3), n=8), (np.arange(8) % 2).astype(np.float32).reshape(-1, 1)
    before = _check_replay(model, x)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    after = _check_replay(model, x)
    assert not np.array_equal(before, after)


def test_evaluate_runs_the_plan_and_gives_the_same_loss():
    from tasks.catdog import seed_model
    tinycnn.manual_seed(0)
    model = seed_model(20, 1, 2)
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    x, y = _images((20, 20, 1), n=6), (np.arange(6) % 2).astype(np.float32).reshape(-1, 1)
    with plan.plans_off():
        expected = model.evaluate(x, y, batch_size=4)
    assert not _plans(model)
    assert model.evaluate(x, y, batch_size=4) == expected
    assert len(_plans(model)) == 2


class _ThresholdNet(tinycnn.Model):
    """Keras' ReLU with a threshold reads its input's values on the host (layers.ReLU.forward)."""

    def __init__(self):
        super().__init__()
        self.conv = layers.Conv2D(4, 3, padding="same")
        self.relu = layers.ReLU(threshold=0.1)

    def forward(self, x):
        return self.relu(self.conv(x))


class _Rewrapping(tinycnn.Module):
    def forward(self, x):
        return Tensor(x.data * 2.0)  # outside the ops: a replay would keep the first batch's values


class _RewrapNet(tinycnn.Model):
    def __init__(self):
        super().__init__()
        self.conv = layers.Conv2D(4, 3, padding="same")
        self.twice = _Rewrapping()

    def forward(self, x):
        return self.conv(self.twice(x))


class _Declared(tinycnn.Module):
    replayable = False

    def forward(self, x):
        return x


class _DeclaredNet(tinycnn.Model):
    def __init__(self):
        super().__init__()
        self.conv = layers.Conv2D(4, 3, padding="same")
        self.mark = _Declared()

    def forward(self, x):
        return self.mark(self.conv(x))


class _MonteCarloDropout(tinycnn.Model):
    def __init__(self):
        super().__init__()
        self.conv = layers.Conv2D(4, 3, padding="same")

    def forward(self, x):
        return tinycnn.functional.dropout(self.conv(x), 0.5, training=True)


@pytest.mark.parametrize("net", [_ThresholdNet, _RewrapNet, _DeclaredNet])
def test_a_pass_that_cannot_be_replayed_runs_its_ordinary_forward(net):
    tinycnn.manual_seed(0)
    model = net()
    x, other = _images((3, 8, 8), n=2), _images((3, 8, 8), n=2, seed=7)
    with plan.plans_off():
        expected, expected_other = model.predict(x), model.predict(other)
    assert np.array_equal(model.predict(x), expected)
    assert np.array_equal(model.predict(other), expected_other)  # not the first batch's values replayed
    assert list(_plans(model).values()) == [None]  # decided once for the shape: no plan


def test_an_op_that_declares_itself_not_replayable_is_not_replayed():
    tinycnn.manual_seed(0)
    model = _MonteCarloDropout()
    x = _images((3, 8, 8), n=2)
    first, second = model.predict(x), model.predict(x)
    assert not np.array_equal(first, second)  # a new mask per call, as the ordinary forward draws
    assert list(_plans(model).values()) == [None]


def test_the_plan_replays_forward_on_raw_arrays():
    from tasks.catdog import seed_model
    tinycnn.manual_seed(0)
    model = seed_model(16, 1, 2)
    model.predict(_images((16, 16, 1)))
    x = Tensor(np.ascontiguousarray(_images((16, 16, 1), n=5).transpose(0, 3, 1, 2)))
    form = inference_form(model)
    replay = plan.InferencePlan(form, x)
    with tinycnn.no_grad():
        expected = form(x).numpy()
    (out,) = replay(x.data)
    assert isinstance(out, np.ndarray) and np.array_equal(out, expected)
    ops = [step[0].__name__ for step in replay._steps]  # the inference form's fused ops, one step each
    assert ops[:2] == ["Conv2dBiasReLUMaxPool2"] * 2 and ops[-1] == "Sigmoid" and len(replay) == len(ops)


def test_a_model_on_cuda_replays_bit_for_bit():
    """The plan keeps each call's kernel set: on cuda (numba's simulator without a GPU) it replays cuda kernels."""
    from numba import cuda
    if not cuda.is_available():
        pytest.skip("no CUDA device or simulator")
    tinycnn.manual_seed(0)
    model = tinycnn.Sequential([layers.Conv2D(4, 3, use_bias=False, input_shape=(8, 8, 2)),
                                layers.BatchNormalization(), layers.Activation("relu"), layers.MaxPooling2D(2),
                                layers.Flatten(), layers.Dense(3, activation="softmax")])
    model.predict(_images((8, 8, 2), n=1))
    _random_statistics(model)
    model.to("cuda")
    _check_replay(model, _images((8, 8, 2), n=2))
    assert {step[1] for p in _plans(model).values() for step in p._steps} == {tinycnn.device.kernels_for("cuda")}


def test_a_copy_of_a_model_starts_without_plans_and_makes_its_own():
    import copy
    import pickle
    from tasks.catdog import seed_model
    tinycnn.manual_seed(0)
    model = seed_model(16, 1, 2)
    x = _images((16, 16, 1))
    expected = _check_replay(model, x)
    for twin in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert np.array_equal(twin.predict(x), expected)
        assert len(_plans(twin)) == 1 and all(isinstance(p, plan.InferencePlan) for p in _plans(twin).values())

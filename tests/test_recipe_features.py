"""The training-recipe features (issue 19): EMA of the weights against its closed form and through fit, Keras'
CosineDecay with warm-up, mixup / CutMix label mass, the per-image policies' shapes, dtypes and ranges, TTA on a
mirror-symmetric model, stochastic depth and binary label smoothing by finite differences, and every cat/dog
preset training a few steps on the built-in images."""
import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from numba import cuda

import tinycnn
from gradcheck import check_gradients
from tinycnn import Tensor, layers, losses, optimizers, train
from tinycnn.data.mixing import CutMix, Mixup, MixupOrCutMix
from tinycnn.data.policies import (ColorJitterHSV, Compose, RandAugment, RandomErasing, RandomResizedCrop,
                                   hsv_to_rgb, rgb_to_hsv)
from tinycnn.checks import UserInputError
from tinycnn.ema import SwapEMAWeights
from tinycnn.tasks import catdog
from tinycnn.tasks.catdog_models import StochasticDepth, resnet_model
from tinycnn.tta import predict_tta, tta_views

FAST = settings(deadline=None, max_examples=15)
seeds = st.integers(0, 2 ** 31 - 1)


# ---------------------------------------------------------------------------------------------- EMA

def sgd_with_ema(momentum, steps, ema_momentum, seed=0, **ema):
    rng = np.random.default_rng(seed)
    p = Tensor(rng.standard_normal(5), requires_grad=True)
    opt = optimizers.SGD([p], lr=0.1, momentum=momentum, use_ema=True, ema_momentum=ema_momentum, **ema)
    weights = []
    for _ in range(steps):
        p.grad = rng.standard_normal(5)
        opt.step()
        weights.append(p.numpy().copy())
    return p, opt, weights


@given(seeds, st.integers(1, 12), st.floats(0.0, 0.99))
@FAST
def test_ema_equals_its_closed_form(seed, steps, m):
    _, opt, w = sgd_with_ema(0.9, steps, m, seed)
    # average_T = m^(T-1) θ_1 + Σ_{t=2..T} (1 − m) m^(T−t) θ_t
    expected = m ** (steps - 1) * w[0] + sum((1 - m) * m ** (steps - t) * w[t - 1] for t in range(2, steps + 1))
    np.testing.assert_allclose(opt.averages[0], expected, rtol=1e-10, atol=1e-12)
    assert opt.iterations == steps


def test_swap_exchanges_and_twice_gives_back_and_training_on_swapped_weights_is_refused():
    p, opt, w = sgd_with_ema(0.0, 5, 0.5)
    average = opt.averages[0].copy()
    opt.swap_ema_weights()
    assert opt.ema_in_model and np.array_equal(p.numpy(), average)
    p.grad = np.ones(5)
    with pytest.raises(RuntimeError, match="swap_ema_weights"):
        opt.step()
    opt.swap_ema_weights()
    assert not opt.ema_in_model and np.array_equal(p.numpy(), w[-1])


def test_ema_overwrite_frequency_copies_the_averages_in_every_n_steps():
    p, opt, _ = sgd_with_ema(0.0, 6, 0.5, ema_overwrite_frequency=3)
    np.testing.assert_array_equal(p.numpy(), opt.averages[0])      # step 6 overwrote
    q, opt5, _ = sgd_with_ema(0.0, 5, 0.5, ema_overwrite_frequency=3)
    assert not np.array_equal(q.numpy(), opt5.averages[0])


def test_ema_state_round_trips_and_bad_settings_are_one_line():
    p, opt, _ = sgd_with_ema(0.9, 4, 0.9)
    opt.swap_ema_weights()
    state = opt.state_dict()
    other = optimizers.SGD([Tensor(p.numpy().copy(), requires_grad=True)], lr=0.1, momentum=0.9, use_ema=True,
                           ema_momentum=0.9)
    other.load_state_dict(state)
    assert other.ema_in_model and other.iterations == 4
    np.testing.assert_array_equal(other.averages[0], opt.averages[0])
    with pytest.raises(ValueError, match="ema_momentum"):
        optimizers.Adam(use_ema=True, ema_momentum=1.5)
    with pytest.raises(ValueError, match="ema_overwrite_frequency"):
        optimizers.Adam(use_ema=True, ema_overwrite_frequency=0)
    assert "use_ema" not in optimizers.to_config(optimizers.Adam())["config"]   # files without EMA unchanged


def small_classifier(seed=0):
    tinycnn.manual_seed(seed)
    return tinycnn.Sequential([layers.Conv2D(4, 3, activation="relu", input_shape=(8, 8, 3)),
                               layers.GlobalAveragePooling2D(), layers.Dense(1, activation="sigmoid")])


def toy_images(n=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 8, 8, 3)).astype(np.float32)
    return x, (x[..., 0].mean(axis=(1, 2)) > 0.5).astype(np.float32)


def test_fit_validates_and_checkpoints_with_the_averages(tmp_path):
    x, y = toy_images()
    model = small_classifier()
    model.compile(loss="binary_crossentropy", optimizer=optimizers.Adam(1e-2, use_ema=True, ema_momentum=0.8))
    seen = {}

    def at_epoch_end(epoch, logs):  # runs before SwapEMAWeights' own on_epoch_end, as a checkpoint would
        seen["in_model"] = model.optimizer.ema_in_model
        seen["weights"] = [w.copy() for w in model.get_weights()]

    history = model.fit(x[:24], y[:24], batch_size=8, epochs=2, verbose=0, validation_data=(x[24:], y[24:]),
                        callbacks=[tinycnn.callbacks.LambdaCallback(on_epoch_end=at_epoch_end), SwapEMAWeights(),
                                   tinycnn.callbacks.ModelCheckpoint(str(tmp_path / "m.tcnn"))])
    assert seen["in_model"]
    # the model ends with the averages (finalized); validation of the last epoch saw these same weights
    for got, expected in zip(model.get_weights(), seen["weights"]):
        np.testing.assert_array_equal(got, expected)
    assert model.evaluate(x[24:], y[24:], batch_size=8) == pytest.approx(history.history["val_loss"][-1])
    saved = tinycnn.load_model(tmp_path / "m.tcnn")
    np.testing.assert_allclose(saved.predict(x), model.predict(x), rtol=1e-6)
    assert saved.optimizer.use_ema and saved.optimizer.ema_in_model


def test_validation_sees_the_averages_when_fit_cannot_say_the_steps():
    x, y = toy_images()
    model = small_classifier()
    model.compile(loss="binary_crossentropy", optimizer=optimizers.Adam(1e-2, use_ema=True, ema_momentum=0.5))
    batches = ((x[i:i + 8], y[i:i + 8]) for i in range(0, 24, 8))  # a generator: no len, no steps
    history = model.fit(batches, epochs=1, verbose=0, validation_data=(x[24:], y[24:]), callbacks=[SwapEMAWeights()])
    assert model.evaluate(x[24:], y[24:], batch_size=8) == pytest.approx(history.history["val_loss"][-1])


def test_batch_norm_statistics_are_averaged_alongside_the_weights():
    x, y = toy_images(40)
    tinycnn.manual_seed(0)
    model = tinycnn.Sequential([layers.Conv2D(4, 3, input_shape=(8, 8, 3)), layers.BatchNormalization(momentum=0.5),
                                layers.GlobalAveragePooling2D(), layers.Dense(1, activation="sigmoid")])
    m = 0.7
    model.compile(loss="binary_crossentropy", optimizer=optimizers.Adam(1e-2, use_ema=True, ema_momentum=m))
    bn = model.layers[1]
    seen = []
    record = tinycnn.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: seen.append(bn.moving_mean.numpy().copy()))
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False, callbacks=[record, SwapEMAWeights()])
    expected = seen[0]
    for value in seen[1:]:
        expected = m * expected + (1 - m) * value
    np.testing.assert_allclose(bn.moving_mean.numpy(), expected, rtol=1e-5)
    assert not np.allclose(expected, seen[-1])  # the averaged statistics differ from the last batch's


def test_swap_callback_without_ema_is_one_line():
    x, y = toy_images(8)
    model = small_classifier()
    model.compile(loss="binary_crossentropy", optimizer="adam")
    with pytest.raises(ValueError, match="use_ema=True"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[SwapEMAWeights()])


# ---------------------------------------------------------------------------------------------- schedules

def test_cosine_decay_with_warmup_values_and_saving(tmp_path):
    schedule = optimizers.CosineDecay(0.0, decay_steps=10, alpha=0.1, warmup_target=1.0, warmup_steps=4)
    assert [schedule(s) for s in range(5)] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    assert schedule(9) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * 5 / 10)))
    assert schedule(14) == schedule(100) == pytest.approx(0.1)
    assert optimizers.CosineDecay(2.0, 4)(2) == pytest.approx(1.0)                       # no warm-up: from 2
    x, y = toy_images(16)
    model = small_classifier()
    model.compile(loss="binary_crossentropy", optimizer=optimizers.Adam(schedule))
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert model.optimizer.lr == pytest.approx(0.25)  # the rate of the last (second) step
    model.save(tmp_path / "s.tcnn")
    loaded = tinycnn.load_model(tmp_path / "s.tcnn")
    assert loaded.optimizer.schedule.get_config() == schedule.get_config()


# ---------------------------------------------------------------------------------------------- mixing

@given(seeds, st.integers(2, 9), st.sampled_from([Mixup, CutMix]))
@FAST
def test_mixing_keeps_label_mass_and_matches_the_pixels(seed, n, mixer_class):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    labels[:3 if n >= 3 else n] = np.arange(min(n, 3))
    images = np.broadcast_to((labels == 1).astype(np.float32)[:, None, None, None], (n, 6, 7, 2)).copy()
    mixed, soft = mixer_class(seed=seed, num_classes=3)(images, labels)
    assert mixed.shape == images.shape and mixed.dtype == np.float32 and soft.shape == (n, 3)
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, rtol=1e-6)                               # each sample
    np.testing.assert_allclose(soft.sum(axis=0), np.bincount(labels, minlength=3), rtol=1e-5)  # each class
    # images that are 1 where the class is 1: the mixed image's mean is the mixed label of class 1
    np.testing.assert_allclose(mixed.mean(axis=(1, 2, 3)), soft[:, 1], atol=1e-5)


def test_binary_labels_mix_as_probabilities_and_bad_labels_are_one_line():
    x, y = toy_images(10)
    _, soft = MixupOrCutMix(seed=1)(x, y)
    assert soft.shape == y.shape and soft.sum() == pytest.approx(y.sum(), rel=1e-5)
    assert ((0 <= soft) & (soft <= 1)).all()
    with pytest.raises(ValueError, match="class indices"):
        Mixup(num_classes=2, seed=0)(x, np.arange(10))
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        CutMix(seed=0)(x[0], y)


def test_mixing_as_fit_augment_trains():
    x, y = toy_images(16)
    model = small_classifier()
    model.compile(loss=losses.BinaryCrossentropy(label_smoothing=0.1), optimizer="adam")
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0, augment=Mixup(0.2, seed=0))
    assert np.isfinite(history.history["loss"][0])


# ---------------------------------------------------------------------------------------------- policies

images_strategy = st.tuples(st.integers(2, 20), st.integers(2, 20), st.sampled_from([1, 3]),
                            st.sampled_from([np.uint8, np.float32]), seeds)


def make_image(h, w, c, dtype, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, c)).astype(np.uint8) if dtype == np.uint8 else \
        rng.random((h, w, c)).astype(np.float32)


@given(images_strategy)
@FAST
def test_policies_keep_shape_dtype_and_range(spec):
    image = make_image(*spec)
    top = 255 if image.dtype == np.uint8 else 1.0
    policies = [RandomResizedCrop((0.2, 1.0), seed=spec[-1]), ColorJitterHSV(0.1, 0.5, 0.5, seed=spec[-1]),
                RandomErasing(1.0, seed=spec[-1]), RandAugment(3, 9, seed=spec[-1]),
                Compose([RandomResizedCrop(), RandAugment(2, 5), RandomErasing(0.5)], seed=spec[-1])]
    for policy in policies:
        out = policy(image)
        assert out.shape == image.shape and out.dtype == image.dtype, type(policy).__name__
        assert out.min() >= 0 and out.max() <= top, type(policy).__name__


def test_policies_on_batches_and_their_neutral_settings():
    image = make_image(12, 10, 3, np.uint8, 0)
    assert np.array_equal(RandomErasing(0.0, seed=0)(image), image)
    assert np.array_equal(ColorJitterHSV(0, 0, 0, seed=0)(image), image)
    assert np.array_equal(RandomResizedCrop((1.0, 1.0), (1.0, 1.0), seed=0)(image), image)
    assert np.array_equal(RandAugment(0, 9, seed=0)(image), image)
    assert not np.array_equal(RandomErasing(1.0, seed=0)(image), image)
    batch, labels = np.stack([image] * 4).astype(np.float32) / 255, np.arange(4)
    out, same = RandAugment(2, 9, seed=0).on_batch(batch, labels)
    assert out.shape == batch.shape and out.dtype == np.float32 and same is labels
    with pytest.raises(ValueError, match="magnitude"):
        RandAugment(2, 11)
    with pytest.raises(ValueError, match=r"\(H, W, C\)"):
        RandomResizedCrop()(batch)


def test_hsv_against_colorsys_and_round_trip():
    import colorsys
    rgb = np.random.default_rng(0).random((9, 7, 3))
    rgb[0, :3] = [[0.2, 0.2, 0.2], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]  # grey, pure red, black
    expected = np.array([[colorsys.rgb_to_hsv(*pixel) for pixel in row] for row in rgb])
    np.testing.assert_allclose(np.stack(rgb_to_hsv(rgb), axis=-1), expected, atol=1e-12)
    np.testing.assert_allclose(hsv_to_rgb(*rgb_to_hsv(rgb)), rgb, atol=1e-12)


# ---------------------------------------------------------------------------------------------- TTA

def test_tta_on_a_mirror_symmetric_model_equals_plain_prediction():
    model = tinycnn.Sequential([layers.GlobalAveragePooling2D(input_shape=(8, 8, 3)),
                                layers.Dense(1, activation="sigmoid")])  # the mean over columns ignores a mirror
    x, _ = toy_images(10)
    np.testing.assert_allclose(predict_tta(model, x, flips=True, batch_size=4), model.predict(x), rtol=1e-6)
    constant = np.ones((3, 8, 8, 3), np.float32) * np.arange(3, dtype=np.float32)[:, None, None, None] / 3
    np.testing.assert_allclose(predict_tta(model, constant, crops=5), model.predict(constant), rtol=1e-6)
    assert len(tta_views(x, flips=True, crops=5)) == 12


def test_tta_views_are_the_mirror_and_the_crops():
    x, _ = toy_images(2)
    views = tta_views(x, flips=True, crops=1, crop_scale=1.0)
    np.testing.assert_array_equal(views[1], x)                      # a full-size centre crop is the image
    np.testing.assert_array_equal(views[2], x[:, :, ::-1])
    with pytest.raises(ValueError, match="crops"):
        tta_views(x, crops=3)


# ---------------------------------------------------------------------------------------------- layers, losses

@given(st.integers(1, 4), st.integers(1, 3), st.integers(1, 4), seeds)
@FAST
def test_stochastic_depth_gradient_by_finite_differences(n, c, side, seed):
    x = np.random.default_rng(seed).standard_normal((n, c, side, side))
    check_gradients(lambda t: StochasticDepth(0.5, seed=seed)(t), [x])


def test_stochastic_depth_drops_whole_samples_and_is_the_identity_in_inference():
    layer = StochasticDepth(0.5, seed=0)
    out = layer(Tensor(np.ones((64, 2, 3, 3), np.float32))).numpy()
    per_sample = out.reshape(64, -1)
    assert set(np.unique(per_sample)) <= {0.0, 2.0} and (per_sample == per_sample[:, :1]).all()
    assert 0 < (per_sample[:, 0] == 0).sum() < 64
    layer.eval()
    assert np.array_equal(layer(Tensor(np.ones((4, 2, 3, 3), np.float32))).numpy(), np.ones((4, 2, 3, 3)))


@given(st.integers(1, 6), st.floats(0.05, 0.5), seeds)
@FAST
def test_binary_label_smoothing_gradient_by_finite_differences(n, eps, seed):
    rng = np.random.default_rng(seed)
    z, y = rng.standard_normal((n, 1)), rng.integers(0, 2, n).astype(np.float64)
    check_gradients(lambda t: losses.BinaryCrossentropy(from_logits=True, label_smoothing=eps)(t, y), [z])
    p = rng.uniform(0.05, 0.95, (n, 1))
    check_gradients(lambda t: losses.BinaryCrossentropy(label_smoothing=eps)(t, y), [p], atol=1e-5)


# ---------------------------------------------------------------------------------------------- presets

def test_resnet_model_shapes_and_zero_init_residual():
    model = resnet_model(32, 3, 2, drop_path=0.1)
    assert model.predict(np.zeros((2, 32, 32, 3), np.float32)).shape == (2, 1)
    zeroed = resnet_model(32, 3, 2, zero_init_residual=True)
    gammas = [m.gamma.numpy() for _, m in zeroed.named_modules() if getattr(m, "zero_gamma", False)]
    assert len(gammas) == 4 and all((g == 0).all() for g in gammas)
    assert resnet_model(32, 1, 5).predict(np.zeros((1, 32, 32, 1), np.float32)).shape == (1, 5)


@pytest.fixture()
def builtin_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


@pytest.mark.parametrize("flags", [["--model", "seed"], ["--model", "strong"], ["--model", "resnet"],
                                   ["--model", "strong-ema"],
                                   ["--model", "strong", "--ema", "0.9", "--mixup", "0.2", "--cutmix", "1",
                                    "--label-smoothing", "0.1", "--randaugment", "2,5", "--warmup", "1", "--crop", "0.5",
                                    "--hsv", "0.02,0.3,0.3", "--erasing", "0.5"]])
def test_every_preset_trains_a_few_steps_on_builtin_data(builtin_cache, flags):
    out = builtin_cache / "run"
    assert train.main(["catdog", *flags, "--epochs", "2", "--builtin-size", "12", "--img-size", "32",
                       "--batch-size", "8", "--quiet", "--out", str(out)]) == 0
    meta = tinycnn.saving.read_metadata(out / "last.tcnn")
    assert meta["epochs_done"] == 2 and meta["preset"] == flags[1]
    assert ("recipe" in meta) == (flags[1] in ("resnet", "strong-ema") or len(flags) > 2)
    if flags == ["--model", "strong-ema"]:
        assert meta["recipe"]["ema"] == 0.998 and meta["recipe"]["crop"] == 0.7 and meta["recipe"]["warmup"] == 1
    if "--mixup" in flags:
        assert meta["recipe"]["mixup"] == 0.2 and meta["recipe"]["randaugment"] == [2, 5]
    model = tinycnn.load_model(out / "best.tcnn")
    assert np.isfinite(model.predict(np.zeros((1, 32, 32, 1 if flags[1] == "seed" else 3), np.float32))).all()


def test_seed_preset_settings_are_the_tutorials():
    parser = __import__("argparse").ArgumentParser()
    catdog.add_train_arguments(parser)
    settings = catdog._settings(parser.parse_args(["--model", "seed"]))
    assert settings == dict(preset="seed", data=None, img_size=100, grayscale=True, resize="stretch", epochs=10,
                            batch_size=32, lr=1e-3, augment=False)
    assert json.dumps(settings)  # what the model file keeps


def test_evaluate_and_predict_with_tta(builtin_cache, capsys):
    from tinycnn import evaluate, predict
    out = builtin_cache / "run"
    assert train.main(["catdog", "--model", "strong", "--epochs", "1", "--builtin-size", "12", "--img-size", "32",
                       "--quiet", "--out", str(out)]) == 0
    data = tinycnn.saving.read_metadata(out / "best.tcnn")["data"]
    capsys.readouterr()
    assert evaluate.main([str(out / "best.tcnn"), "--data", data, "--json", "--tta"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["images"] == 24 and 0 <= report["accuracy"] <= 1
    photo = sorted((__import__("pathlib").Path(data) / "cat").iterdir())[0]
    assert predict.main([str(out / "best.tcnn"), str(photo), "--tta"]) == 0
    assert capsys.readouterr().out.startswith(str(photo))


def test_three_classes_train_with_mixing_on_one_hot_targets(builtin_cache):
    from PIL import Image
    rng = np.random.default_rng(0)
    for k, name in enumerate(["ant", "bee", "cow"]):
        (builtin_cache / "three" / name).mkdir(parents=True)
        for i in range(8):
            pixels = (rng.random((16, 16, 3)) * 80 + 60 * k).astype(np.uint8)
            Image.fromarray(pixels).save(builtin_cache / "three" / name / f"{i}.png")
    out = builtin_cache / "run"
    assert train.main(["catdog", "--data", str(builtin_cache / "three"), "--model", "resnet", "--mixup", "0.2",
                       "--epochs", "2", "--img-size", "16", "--batch-size", "8", "--val-split", "0.25", "--quiet",
                       "--out", str(out)]) == 0
    model = tinycnn.load_model(out / "last.tcnn")
    assert model.predict(np.zeros((1, 16, 16, 3), np.float32)).shape == (1, 3)
    assert model.loss.get_config()["label_smoothing"] == pytest.approx(0.1)


def test_more_warmup_than_epochs_is_one_line(builtin_cache):
    with pytest.raises(UserInputError, match="--warmup 3"):
        train.main(["catdog", "--model", "resnet", "--warmup", "3", "--epochs", "2", "--builtin-size", "4",
                    "--img-size", "16", "--quiet", "--out", str(builtin_cache / "run")])
    assert not (builtin_cache / "run").exists()  # refused before any run folder or data


@pytest.mark.skipif(not cuda.is_available(), reason="no CUDA device or simulator")
def test_ema_on_cuda_matches_the_cpu():
    """The averages of device arrays go through the device's elementwise kernels (NUMBA_ENABLE_CUDASIM=1 here)."""
    results = {}
    for device in ("cpu", "cuda"):
        rng = np.random.default_rng(0)
        p = Tensor(rng.standard_normal(6), requires_grad=True, device=device)
        opt = optimizers.SGD([p], lr=0.1, use_ema=True, ema_momentum=0.6)
        for _ in range(4):
            p.grad = tinycnn.Tensor(rng.standard_normal(6), device=device).data
            opt.step()
        opt.swap_ema_weights()
        results[device] = (p.numpy(), opt.state_dict()["param.0.ema"])
    for got, want in zip(results["cuda"], results["cpu"]):
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_recipe_flags_override_the_preset_and_switch_off():
    parser = __import__("argparse").ArgumentParser()
    catdog.add_train_arguments(parser)
    recipe = catdog._settings(parser.parse_args(["--model", "resnet", "--no-ema", "--randaugment", "0,0",
                                                 "--mixup", "0.4"]))["recipe"]
    assert recipe["ema"] is None and recipe["randaugment"] is None and recipe["mixup"] == 0.4
    assert recipe["label_smoothing"] == 0.1  # the preset's
    strong = catdog._settings(parser.parse_args(["--model", "strong", "--ema"]))["recipe"]
    assert strong["ema"] == 0.999 and strong["crop"] == 0.0 and strong["warmup"] == 0
    with pytest.raises(UserInputError, match="--ema"):
        catdog._settings(parser.parse_args(["--ema", "1.5"]))
    for flag, value in (("--mixup", "-1"), ("--crop", "1.5"), ("--erasing", "2"), ("--label-smoothing", "1"),
                        ("--drop-path", "-0.1"), ("--warmup", "-1"), ("--hsv", "0.7,0,0")):
        with pytest.raises(UserInputError, match=flag):
            catdog._settings(parser.parse_args([flag, value]))
    for bad in (["--randaugment", "2"], ["--randaugment", "2.5,3"], ["--hsv", "0.1,0.2"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


def test_strong_ema_preset_is_the_measured_command():
    """`--model strong-ema` is exactly the run measured in the README: the strong net with
    --img-size 128 --epochs 45 --warmup 1 --crop 0.7 --hsv 0.02,0.2,0.2 --ema 0.998."""
    parser = __import__("argparse").ArgumentParser()
    catdog.add_train_arguments(parser)
    preset = catdog._settings(parser.parse_args(["--model", "strong-ema", "--data", "photos"]))
    flags = catdog._settings(parser.parse_args(["--model", "strong", "--data", "photos", "--img-size", "128",
                                                "--epochs", "45", "--warmup", "1", "--crop", "0.7",
                                                "--hsv", "0.02,0.2,0.2", "--ema", "0.998"]))
    assert preset.pop("preset") == "strong-ema" and flags.pop("preset") == "strong"
    assert preset["recipe"].pop("hsv") == pytest.approx(flags["recipe"].pop("hsv"))
    assert preset == flags

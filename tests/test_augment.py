"""tinycnn.data.augment.Augment: shape, range, order (labels still apply), determinism, each transform."""
import numpy as np
import pytest

import tinycnn
from tinycnn.data.augment import Augment


def batch(n=8, height=12, width=10, channels=1, seed=0):
    return np.random.default_rng(seed).random((n, height, width, channels), dtype=np.float32)


def constant_batch(values, height=9, width=7, channels=1):
    return np.asarray(values, np.float32)[:, None, None, None] * np.ones((1, height, width, channels), np.float32)


def test_keeps_shape_dtype_and_unit_range_and_leaves_the_input_alone():
    x = batch(channels=3)
    x[0] = 1.0
    x[1] = 0.0
    original = x.copy()
    y = Augment(brightness=0.5, contrast=0.5, seed=0)(x)
    assert y.shape == x.shape and y.dtype == np.float32
    assert y.min() >= 0.0 and y.max() <= 1.0 and not np.array_equal(y, x)
    np.testing.assert_array_equal(x, original)


def test_same_seed_same_sequence_of_batches():
    x = batch()
    a, b = Augment(seed=3), Augment(seed=3)
    first, second = a(x), a(x)
    np.testing.assert_array_equal(first, b(x))
    np.testing.assert_array_equal(second, b(x))
    assert not np.array_equal(first, second)                    # every call draws anew
    assert not np.array_equal(first, Augment(seed=4)(x))


def test_a_given_generator_is_used():
    x = batch()
    np.testing.assert_array_equal(Augment(rng=np.random.default_rng(5))(x), Augment(seed=5)(x))


def test_the_engine_generator_is_the_default():
    x = batch()
    tinycnn.manual_seed(11)
    first = Augment()(x)
    tinycnn.manual_seed(11)
    np.testing.assert_array_equal(first, Augment()(x))


def test_images_keep_their_place_in_the_batch():
    # a constant image stays itself under flips, crops and contrast: so each output is its own input
    x = constant_batch(np.linspace(0.1, 0.9, 16))
    y = Augment(flip=True, crop_scale=(0.3, 1.0), brightness=0.0, contrast=0.5, seed=0)(x)
    np.testing.assert_allclose(y, x, atol=1e-6)


def test_everything_off_is_the_identity():
    x = batch()
    y = Augment(flip=False, crop_scale=None, brightness=0, contrast=0, seed=0)(x)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(Augment(flip=False, crop_scale=(1.0, 1.0), brightness=0, contrast=0)(x), x)


def test_flip_mirrors_about_half_of_the_images():
    x = batch(n=64)
    y = Augment(flip=True, crop_scale=None, brightness=0, contrast=0, seed=0)(x)
    same = [np.array_equal(a, b) for a, b in zip(x, y)]
    mirrored = [np.array_equal(a[:, ::-1], b) for a, b in zip(x, y)]
    assert all(s or m for s, m in zip(same, mirrored))
    assert 20 <= sum(mirrored) <= 44


def test_crop_zooms_in_with_exact_bilinear_interpolation():
    width = 20
    ramp = np.tile(np.arange(width, dtype=np.float32) / (width - 1), (4, 16, 1))[..., None]  # value = column
    y = Augment(flip=False, crop_scale=(0.25, 0.25), brightness=0, contrast=0, seed=0)(ramp)
    steps = np.diff(y[:, 0, :, 0], axis=1)[:, 1:-1]    # the outer pixels may be clamped at the image's edge
    np.testing.assert_allclose(steps, 0.5 / (width - 1), atol=1e-6)   # half the width shown: half the slope
    np.testing.assert_allclose(y[:, :, :, 0], y[:, :1, :, 0].repeat(16, axis=1))  # still constant down columns
    starts = y[:, 0, 0, 0]
    assert starts.min() >= 0 and starts.max() <= 0.5 + 1e-6 and np.ptp(starts) > 0  # windows at random places


def test_crop_of_the_whole_area_is_nearly_the_identity():
    x = batch()
    y = Augment(flip=False, crop_scale=(0.9999999, 1.0), brightness=0, contrast=0, seed=0)(x)
    np.testing.assert_allclose(y, x, atol=1e-3)


def test_brightness_shifts_each_image_within_the_range():
    x = constant_batch(np.full(32, 0.5))
    y = Augment(flip=False, crop_scale=None, brightness=0.2, contrast=0, seed=0)(x)
    shifts = y[:, 0, 0, 0] - 0.5
    assert np.abs(shifts).max() <= 0.2 + 1e-6 and shifts.std() > 0.05
    np.testing.assert_allclose(y, np.broadcast_to(shifts[:, None, None, None] + 0.5, y.shape), atol=1e-6)


def test_contrast_scales_around_the_image_mean():
    x = np.zeros((16, 4, 4, 1), np.float32)
    x[:, :, :2] = 0.4
    x[:, :, 2:] = 0.6                                           # mean 0.5, spread 0.2
    y = Augment(flip=False, crop_scale=None, brightness=0, contrast=0.5, seed=0)(x)
    spread = y[:, 0, 3, 0] - y[:, 0, 0, 0]
    assert spread.min() >= 0.1 - 1e-6 and spread.max() <= 0.3 + 1e-6 and spread.std() > 0.01
    np.testing.assert_allclose(y.mean(axis=(1, 2, 3)), 0.5, atol=1e-6)


def test_empty_batch():
    assert Augment(seed=0)(np.zeros((0, 5, 5, 1), np.float32)).shape == (0, 5, 5, 1)


@pytest.mark.parametrize("kwargs", [dict(crop_scale=(0.0, 1.0)), dict(crop_scale=(0.9, 0.5)),
                                    dict(crop_scale=(0.5, 1.5)), dict(brightness=-0.1), dict(contrast=1.5)])
def test_bad_settings_are_rejected(kwargs):
    with pytest.raises(ValueError):
        Augment(**kwargs)


def test_a_batch_must_be_four_dimensional():
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        Augment(seed=0)(np.zeros((5, 5, 1), np.float32))

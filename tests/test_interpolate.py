"""interpolate: nearest (integer factors) and bilinear (align_corners False/True), and nearest with the channels
last — gradients against finite differences (float64), the CPU kernels against the NumPy reference (float32
and float64), PyTorch's coordinate mapping on known values, the layer in both layouts, and error cases."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tinycnn
from tinycnn import functional as F
from tinycnn import layers
from tinycnn.kernels.cpu import interpolate as cpu
from tinycnn.kernels.reference import interpolate as ref
from tinycnn.ops.interpolate import interpolate_channels_last
from gradcheck import check_gradients

small_shapes = st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 4), st.integers(1, 4))
seeds = st.integers(0, 2 ** 31)
dtypes = st.sampled_from([np.float32, np.float64])


# ---------------------------------------------------------------------- gradients (float64)

@settings(deadline=None, max_examples=15)
@given(small_shapes, st.integers(1, 3), st.integers(1, 3), seeds)
def test_nearest_gradient(shape, sh, sw, seed):
    x = np.random.default_rng(seed).standard_normal(shape)
    check_gradients(lambda x: F.interpolate(x, scale_factor=(sh, sw), mode="nearest"), [x])


@settings(deadline=None, max_examples=15)
@given(small_shapes, st.integers(1, 3), st.integers(1, 3), seeds)
def test_nearest_channels_last_gradient(shape, sh, sw, seed):
    x = np.random.default_rng(seed).standard_normal(shape)
    check_gradients(lambda x: interpolate_channels_last(x, scale_factor=(sh, sw)), [x])


@settings(deadline=None, max_examples=20)
@given(small_shapes, st.integers(1, 7), st.integers(1, 7), st.booleans(), seeds)
def test_bilinear_gradient(shape, oh, ow, align_corners, seed):
    x = np.random.default_rng(seed).standard_normal(shape)
    check_gradients(lambda x: F.interpolate(x, size=(oh, ow), mode="bilinear", align_corners=align_corners), [x])


# ---------------------------------------------------------------------- CPU kernels against the reference

@settings(deadline=None, max_examples=15)
@given(small_shapes, st.integers(1, 3), st.integers(1, 3), dtypes, seeds)
def test_nearest_kernels_match_reference(shape, sh, sw, dtype, seed):
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    y = cpu.upsample_nearest2d_forward(x, (sh, sw))
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, ref.upsample_nearest2d_forward(x, (sh, sw)))
    dy = np.random.default_rng(seed + 1).standard_normal(y.shape).astype(dtype)
    dx = cpu.upsample_nearest2d_backward(dy, (sh, sw))
    assert dx.dtype == dtype
    np.testing.assert_allclose(dx, ref.upsample_nearest2d_backward(dy, (sh, sw)), rtol=1e-5, atol=1e-6)


@settings(deadline=None, max_examples=15)
@given(st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 5), st.integers(1, 40)), st.integers(1, 3),
       st.integers(1, 3), dtypes, seeds)
def test_nearest_channels_last_kernels_match_reference(shape, sh, sw, dtype, seed):
    """(N, H, W, C) from 1 to 40 channels (a SIMD vector and a remainder), on one thread and on the threads."""
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    y = cpu.upsample_nearest2d_last_forward(x, (sh, sw))
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, ref.upsample_nearest2d_last_forward(x, (sh, sw)))
    np.testing.assert_array_equal(y, ref.upsample_nearest2d_forward(x.transpose(0, 3, 1, 2), (sh, sw)).transpose(0, 2, 3, 1))
    dy = np.random.default_rng(seed + 1).standard_normal(y.shape).astype(dtype)
    dx = cpu.upsample_nearest2d_last_backward(dy, (sh, sw))
    assert dx.dtype == dtype
    np.testing.assert_allclose(dx, ref.upsample_nearest2d_last_backward(dy, (sh, sw)), rtol=1e-5, atol=1e-6)


def test_nearest_channels_last_kernels_on_the_threads():
    """A map big enough to be cut into ranges of rows for the threads (threads.SERIAL_BELOW values)."""
    x = np.random.default_rng(5).standard_normal((4, 16, 16, 64)).astype(np.float32)
    y = cpu.upsample_nearest2d_last_forward(x, (2, 2))
    np.testing.assert_array_equal(y, ref.upsample_nearest2d_last_forward(x, (2, 2)))
    dx = cpu.upsample_nearest2d_last_backward(y, (2, 2))
    np.testing.assert_allclose(dx, 4 * x, rtol=1e-6)


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_upsampling_layer_channels_last_matches_channels_first(interpolation):
    x = np.random.default_rng(6).standard_normal((2, 3, 5, 4)).astype(np.float32)
    first = layers.UpSampling2D((2, 3), interpolation=interpolation)(tinycnn.Tensor(x)).numpy()
    last = layers.UpSampling2D((2, 3), interpolation=interpolation, data_format="channels_last")(
        tinycnn.Tensor(x.transpose(0, 2, 3, 1))).numpy()
    np.testing.assert_allclose(last, first.transpose(0, 2, 3, 1), rtol=1e-6, atol=1e-6)
    assert layers.UpSampling2D(2, data_format="channels_last").get_config()["data_format"] == "channels_last"
    assert "data_format" not in layers.UpSampling2D(2).get_config()


@settings(deadline=None, max_examples=20)
@given(small_shapes, st.integers(1, 9), st.integers(1, 9), st.booleans(), dtypes, seeds)
def test_bilinear_kernels_match_reference(shape, oh, ow, align_corners, dtype, seed):
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    y = cpu.upsample_bilinear2d_forward(x, (oh, ow), align_corners)
    assert y.dtype == dtype and y.shape == shape[:2] + (oh, ow)
    np.testing.assert_allclose(y, ref.upsample_bilinear2d_forward(x, (oh, ow), align_corners), rtol=tol, atol=tol)
    dy = np.random.default_rng(seed + 1).standard_normal(y.shape).astype(dtype)
    dx = cpu.upsample_bilinear2d_backward(dy, shape, align_corners)
    assert dx.dtype == dtype
    np.testing.assert_allclose(dx, ref.upsample_bilinear2d_backward(dy, shape, align_corners), rtol=tol, atol=tol)


# ---------------------------------------------------------------------- known values (PyTorch's mapping)

def _row(values):
    return tinycnn.Tensor(np.array(values, np.float64).reshape(1, 1, 1, -1))


def test_bilinear_align_corners_false_matches_pytorch():
    # torch.nn.functional.interpolate(torch.tensor([[[[0., 1.]]]]), size=(1, 4), mode="bilinear")
    y = F.interpolate(_row([0, 1]), size=(1, 4), mode="bilinear")
    np.testing.assert_allclose(y.numpy().ravel(), [0, 0.25, 0.75, 1])
    y = F.interpolate(_row([0, 3, 6]), size=(1, 2), mode="bilinear")       # downsampling: sources 0.25, 1.75
    np.testing.assert_allclose(y.numpy().ravel(), [0.75, 5.25])


def test_bilinear_align_corners_true_matches_pytorch():
    y = F.interpolate(_row([0, 1]), size=(1, 3), mode="bilinear", align_corners=True)
    np.testing.assert_allclose(y.numpy().ravel(), [0, 0.5, 1])
    y = F.interpolate(_row([2, 4, 8]), size=(1, 5), mode="bilinear", align_corners=True)
    np.testing.assert_allclose(y.numpy().ravel(), [2, 3, 4, 6, 8])


def test_scale_factor_and_size_agree():
    x = tinycnn.Tensor(np.random.default_rng(0).standard_normal((2, 3, 3, 4)).astype(np.float32))
    for mode, corners in (("nearest", None), ("bilinear", False), ("bilinear", True)):
        by_scale = F.interpolate(x, scale_factor=2, mode=mode, align_corners=corners)
        by_size = F.interpolate(x, size=(6, 8), mode=mode, align_corners=corners)
        assert by_scale.shape == (2, 3, 6, 8) and by_scale.dtype == np.float32
        np.testing.assert_array_equal(by_scale.numpy(), by_size.numpy())


def test_nearest_copies_pixels():
    x = tinycnn.Tensor(np.array([[[[1.0, 2.0], [3.0, 4.0]]]]))
    y = F.interpolate(x, scale_factor=(1, 2.0))
    np.testing.assert_array_equal(y.numpy()[0, 0], [[1, 1, 2, 2], [3, 3, 4, 4]])


# ---------------------------------------------------------------------- errors

def test_interpolate_errors():
    x = tinycnn.Tensor(np.zeros((1, 1, 4, 4), np.float32))
    with pytest.raises(ValueError, match="mode"):
        F.interpolate(x, scale_factor=2, mode="bicubic")
    with pytest.raises(ValueError, match="exactly one"):
        F.interpolate(x)
    with pytest.raises(ValueError, match="exactly one"):
        F.interpolate(x, size=8, scale_factor=2)
    with pytest.raises(ValueError, match="integer scale"):
        F.interpolate(x, scale_factor=1.5)
    with pytest.raises(ValueError, match="integer multiples"):
        F.interpolate(x, size=(6, 8))
    with pytest.raises(ValueError, match="align_corners"):
        F.interpolate(x, scale_factor=2, align_corners=True)
    with pytest.raises(ValueError, match="4-D"):
        F.interpolate(tinycnn.Tensor(np.zeros((1, 4, 4), np.float32)), scale_factor=2)
    with pytest.raises(ValueError, match="positive"):
        F.interpolate(x, size=(0, 4), mode="bilinear")
    with pytest.raises(ValueError, match="empty output"):
        F.interpolate(x, scale_factor=0.1, mode="bilinear")
    with pytest.raises(ValueError, match="size"):
        F.interpolate(x, size=(2.5, 4), mode="bilinear")
    with pytest.raises(ValueError, match=r"integer multiples of the input only: size \(6, 8\) for input shape \(1, 4, 4, 1\)"):
        interpolate_channels_last(tinycnn.Tensor(np.zeros((1, 4, 4, 1), np.float32)), size=(6, 8))
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        interpolate_channels_last(tinycnn.Tensor(np.zeros((4, 4, 1), np.float32)), scale_factor=2)

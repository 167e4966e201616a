"""Channels-last (NHWC) convolution and batch norm: the kernels against the NumPy reference (on the transposed
arrays), gradients against finite differences (float64), the layers and the plate regressor against their
channels-first selves with the same weights, and a GEMM split along its inner dimension."""
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import tinycnn
from gradcheck import check_gradients
from test_conv import TOL
from test_conv_fold import _padded, _with_trained_batch_norms, uneven_cases
from tinycnn import layers
from tinycnn.kernels.cpu import batchnorm as cpu_bn
from tinycnn.kernels.cpu import conv as cpu
from tinycnn.kernels.cpu import gemm
from tinycnn.kernels.reference import batchnorm as ref_bn
from tinycnn.kernels.reference import conv as ref
from tinycnn.ops.batchnorm import batch_norm_activation
from tinycnn.ops.conv import conv2d_activation, conv2d_channels_last

DTYPES = [np.float32, np.float64]
ACTIVATIONS = {None: lambda z: z, "relu": lambda z: np.maximum(z, 0), "relu6": lambda z: np.clip(z, 0, 6)}


def to_last(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def to_first(a):
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2))


def _kernel_takes(case):
    """groups = 1, or one filter per channel (a depthwise conv without a channel multiplier)."""
    F, per_group = case["w_shape"][:2]
    return case["groups"] == 1 or (case["groups"] == case["x_shape"][1] == F and per_group == 1)


@pytest.mark.parametrize("dtype", DTYPES)
@settings(deadline=None, max_examples=30)
@given(case=uneven_cases(), activation=st.sampled_from([None, "relu", "relu6"]), seed=st.integers(0, 2**16))
def test_kernels_match_reference(dtype, case, activation, seed):
    """conv2d_channels_last_forward/backward on NHWC arrays = the reference NCHW conv of the padded input."""
    assume(_kernel_takes(case))
    rng = np.random.default_rng(seed)
    x, w, b = (rng.standard_normal(case["x_shape"]) * 3, rng.standard_normal(case["w_shape"]),
               rng.standard_normal(case["w_shape"][0]))
    stride, padding, dilation, groups = case["stride"], case["padding"], case["dilation"], case["groups"]
    xp = _padded(x, padding)
    z = ref.conv2d_forward(xp, w, b, stride, (0, 0), dilation, groups)
    y = cpu.conv2d_channels_last_forward(to_last(x).astype(dtype), w.astype(dtype), b.astype(dtype), stride,
                                         padding, dilation, groups, activation)
    assert y.dtype == dtype and y.shape == to_last(z).shape
    np.testing.assert_allclose(y, to_last(ACTIVATIONS[activation](z)), **TOL[dtype])

    dy = rng.standard_normal(y.shape)
    dxp, dw, db = ref.conv2d_backward(to_first(dy), xp, w, stride, (0, 0), dilation, groups, True, True, True)
    top, _, left, _ = padding
    H, W = x.shape[2:]
    got = cpu.conv2d_channels_last_backward(dy.astype(dtype), to_last(x).astype(dtype), w.astype(dtype), stride,
                                            padding, dilation, groups, True, True, True)
    expected = (to_last(dxp[:, :, top:top + H, left:left + W]), dw, db)
    for label, g, e in zip(("dx", "dw", "db"), got, expected):
        assert g.dtype == dtype and g.shape == e.shape and g.flags.c_contiguous, label
        np.testing.assert_allclose(g, e, err_msg=label, **TOL[dtype])
    for need in ((True, False, False), (False, True, False), (False, False, True)):  # only what is asked for
        alone = cpu.conv2d_channels_last_backward(dy.astype(dtype), to_last(x).astype(dtype), w.astype(dtype),
                                                  stride, padding, dilation, groups, *need)
        for label, wanted, g, e in zip(("dx", "dw", "db"), need, alone, expected):
            if wanted:
                np.testing.assert_allclose(g, e, err_msg=label, **TOL[dtype])
            else:
                assert g is None, label


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C, stride, padding, dilation, shape", [
    (32, (1, 1), (1, 1, 1, 1), (1, 1), (2, 9, 11)),     # unit stride: one SIMD loop per tap over a whole row
    (17, (2, 1), (0, 1, 1, 1), (1, 1), (2, 8, 7)),      # unit stride along the rows only, 17 channels
    (20, (1, 1), (2, 2, 2, 2), (2, 2), (1, 7, 9)),      # dilated
    (33, (1, 2), (1, 1, 0, 1), (1, 2), (2, 6, 10)),     # strided along the rows: the per-pixel kernels
    (48, (2, 2), (0, 1, 0, 1), (1, 1), (3, 8, 8)),      # Keras 'same' at stride 2
    (100, (1, 1), (1, 1, 1, 1), (1, 1), (1, 5, 23)),    # rows of 2,300 values: chunks of 10, 10 and 3 pixels
    (300, (1, 1), (2, 2, 2, 2), (2, 2), (1, 6, 9)),     # chunks of 3 pixels, a dilated tap reaching across one
])
def test_depthwise_many_channels_match_reference(dtype, C, stride, padding, dilation, shape):
    """Depthwise convs with more channels than one SIMD vector, through both depthwise paths."""
    N, H, W = shape
    rng = np.random.default_rng(C)
    x, w, b = rng.standard_normal((N, C, H, W)), rng.standard_normal((C, 1, 3, 3)), rng.standard_normal(C)
    xp = _padded(x, padding)
    z = ref.conv2d_forward(xp, w, b, stride, (0, 0), dilation, C)
    y = cpu.conv2d_channels_last_forward(to_last(x).astype(dtype), w.astype(dtype), b.astype(dtype), stride,
                                         padding, dilation, C, "relu6")
    np.testing.assert_allclose(y, to_last(np.clip(z, 0, 6)), **TOL[dtype])
    dy = rng.standard_normal(y.shape)
    dxp, dw, db = ref.conv2d_backward(to_first(dy), xp, w, stride, (0, 0), dilation, C, True, True, True)
    top, _, left, _ = padding
    got = cpu.conv2d_channels_last_backward(dy.astype(dtype), to_last(x).astype(dtype), w.astype(dtype), stride,
                                            padding, dilation, C, True, True, True)
    for label, g, e in zip(("dx", "dw", "db"), got, (to_last(dxp[:, :, top:top + H, left:left + W]), dw, db)):
        np.testing.assert_allclose(g, e, err_msg=label, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@settings(deadline=None, max_examples=30)
@given(N=st.integers(1, 2), H=st.integers(1, 6), W=st.integers(2, 9), C=st.integers(1, 40),
       top=st.integers(0, 2), bottom=st.integers(0, 2), activation=st.sampled_from([None, "relu6"]),
       banded=st.booleans(), seed=st.integers(0, 2**16))
def test_depthwise3x3_matches_reference(dtype, N, H, W, C, top, bottom, activation, banded, seed):
    """The stride-1 3×3 depthwise kernel (nine taps in registers; kernels/cpu/conv/depthwise3x3.py), forward
    and input gradient (the turned taps), and the banded backward (taken from BANDED_MIN_CHANNELS channels:
    here, when `banded`, from 1), against the reference, for any rows of padding above and below, rows of 2
    pixels up, channels below and above a SIMD vector."""
    assume(H + top + bottom >= 3)
    from tinycnn.kernels.cpu.conv import depthwise3x3
    saved = depthwise3x3.BANDED_MIN_CHANNELS
    depthwise3x3.BANDED_MIN_CHANNELS = 1 if banded else 10**9
    try:
        _check_depthwise3x3(dtype, N, H, W, C, top, bottom, activation, seed)
    finally:
        depthwise3x3.BANDED_MIN_CHANNELS = saved


def _check_depthwise3x3(dtype, N, H, W, C, top, bottom, activation, seed):
    from tinycnn.kernels.cpu.conv import depthwise3x3
    rng = np.random.default_rng(seed)
    x, w, b = rng.standard_normal((N, C, H, W)), rng.standard_normal((C, 1, 3, 3)), rng.standard_normal(C)
    padding = (top, bottom, 1, 1)
    xp = _padded(x, padding)
    z = ref.conv2d_forward(xp, w, b, (1, 1), (0, 0), (1, 1), C)
    assert depthwise3x3.applies(to_last(x).shape, w.shape, to_last(z).shape, (1, 1), (top, 1), (1, 1))
    y = cpu.conv2d_channels_last_forward(to_last(x).astype(dtype), w.astype(dtype), b.astype(dtype), (1, 1),
                                         padding, (1, 1), C, activation)
    np.testing.assert_allclose(y, to_last(ACTIVATIONS[activation](z)), **TOL[dtype])
    dy = rng.standard_normal(y.shape)
    dxp, dw, db = ref.conv2d_backward(to_first(dy), xp, w, (1, 1), (0, 0), (1, 1), C, True, True, True)
    got = cpu.conv2d_channels_last_backward(dy.astype(dtype), to_last(x).astype(dtype), w.astype(dtype), (1, 1),
                                            padding, (1, 1), C, True, True, True)
    for label, g, e in zip(("dx", "dw", "db"), got, (to_last(dxp[:, :, top:top + H, 1:1 + W]), dw, db)):
        np.testing.assert_allclose(g, e, err_msg=label, **TOL[dtype])
    dx_none, dw_alone, db_alone = cpu.conv2d_channels_last_backward(  # no dx: the banded backward skips it
        dy.astype(dtype), to_last(x).astype(dtype), w.astype(dtype), (1, 1), padding, (1, 1), C, False, True, True)
    assert dx_none is None
    np.testing.assert_allclose(dw_alone, dw, **TOL[dtype])
    np.testing.assert_allclose(db_alone, db, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@settings(deadline=None, max_examples=30)
@given(N=st.integers(1, 2), H=st.integers(3, 8), W=st.integers(3, 12), C=st.integers(1, 40),
       padding=st.tuples(st.integers(0, 1), st.integers(0, 2), st.integers(0, 1), st.integers(0, 2)),
       activation=st.sampled_from([None, "relu6"]), seed=st.integers(0, 2**16))
def test_depthwise3x3_stride_2_matches_reference(dtype, N, H, W, C, padding, activation, seed):
    """The nine-tap kernel at stride 2 (Keras' 'same' pads only the bottom and right, torch's pads all four
    sides), forward, against the reference (the backward at stride 2 is channels_last.py's)."""
    from tinycnn.kernels.cpu.conv import depthwise3x3
    top, bottom, left, right = padding
    rng = np.random.default_rng(seed)
    x, w, b = rng.standard_normal((N, C, H, W)), rng.standard_normal((C, 1, 3, 3)), rng.standard_normal(C)
    xp = _padded(x, padding)
    z = ref.conv2d_forward(xp, w, b, (2, 2), (0, 0), (1, 1), C)
    assume(depthwise3x3.applies(to_last(x).shape, w.shape, to_last(z).shape, (2, 2), (top, left), (1, 1)))
    y = cpu.conv2d_channels_last_forward(to_last(x).astype(dtype), w.astype(dtype), b.astype(dtype), (2, 2),
                                         padding, (1, 1), C, activation)
    np.testing.assert_allclose(y, to_last(ACTIVATIONS[activation](z)), **TOL[dtype])


@pytest.mark.parametrize("F", [1, 3, 4, 5])
def test_pointwise_backward_with_few_filters(F):
    """A 1×1 conv with a few filters (a detector head's) takes a row at a time (THIN_FILTERS), its dW summed in
    float32 for 256 rows, then in float64: against NumPy's float64 products, over 1,600 rows."""
    from tinycnn.kernels.cpu.conv import channels_last as cl
    rng = np.random.default_rng(F)
    x, w, dy = rng.standard_normal((2, 20, 40, 24)), rng.standard_normal((F, 24, 1, 1)), rng.standard_normal((2, 20, 40, F))
    dx, dw, db = cpu.conv2d_channels_last_backward(dy.astype(np.float32), x.astype(np.float32), w.astype(np.float32),
                                                   (1, 1), (0, 0, 0, 0), (1, 1), 1, True, True, True)
    dy2, x2 = dy.reshape(-1, F), x.reshape(-1, 24)
    np.testing.assert_allclose(dx, (dy2 @ w.reshape(F, 24)).reshape(x.shape), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dw, (dy2.T @ x2).reshape(w.shape), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(db, dy2.sum(axis=0), rtol=1e-4, atol=1e-3)
    assert (F <= cl.THIN_FILTERS) == (F < 5)


def test_pointwise_conv_with_uneven_padding():
    """A 1×1 conv padded at the bottom and right only: not the plain GEMM path (the output is larger)."""
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((6, 3, 1, 1))
    y = cpu.conv2d_channels_last_forward(to_last(x), w, None, (1, 1), (0, 1, 0, 2), (1, 1), 1)
    expected = ref.conv2d_forward(_padded(x, (0, 1, 0, 2)), w, None, (1, 1), (0, 0), (1, 1), 1)
    np.testing.assert_allclose(y, to_last(expected), rtol=1e-12, atol=1e-12)


@settings(deadline=None, max_examples=25)
@given(case=uneven_cases(), activation=st.sampled_from([None, "relu6"]), seed=st.integers(0, 2**16))
def test_gradients(case, activation, seed):
    """Every conv, the kernels' (groups 1, depthwise) and the others' (grouped, channel multiplier: the NCHW
    conv between two transposes), against finite differences."""
    rng = np.random.default_rng(seed)
    x, w, b = (rng.standard_normal(case["x_shape"]), rng.standard_normal(case["w_shape"]),
               rng.standard_normal(case["w_shape"][0]))
    top, bottom, left, right = case["padding"]

    def fn(x, w, b):
        return conv2d_channels_last(x, w, b, case["stride"], ((top, bottom), (left, right)), case["dilation"],
                                    case["groups"], activation)
    check_gradients(fn, [to_last(x) * 2, w, b])


def test_same_values_as_the_channels_first_op():
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((2, 5, 7, 4)), rng.standard_normal((6, 2, 3, 3))  # groups = 2: the fallback
    y = conv2d_channels_last(tinycnn.Tensor(x), tinycnn.Tensor(w), None, 2, 1, 1, 2, "relu")
    expected = conv2d_activation(tinycnn.Tensor(to_first(x)), tinycnn.Tensor(w), None, 2, 1, 1, 2, "relu")
    np.testing.assert_allclose(y.numpy(), to_last(expected.numpy()), rtol=1e-12, atol=1e-12)


def test_errors_name_the_layout():
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        conv2d_channels_last(tinycnn.Tensor(np.zeros((3, 4, 5))), tinycnn.Tensor(np.zeros((2, 5, 1, 1))))
    with pytest.raises(ValueError, match="channels"):
        conv2d_channels_last(tinycnn.Tensor(np.zeros((1, 3, 3, 4))), tinycnn.Tensor(np.zeros((2, 5, 1, 1))))
    with pytest.raises(ValueError, match="data_format"):
        layers.Conv2D(2, 3, data_format="NHWC")


# ---------------------------------------------------------------------- batch norm on (M, C) rows

@pytest.mark.parametrize("dtype", DTYPES)
@settings(deadline=None, max_examples=25)
@given(rows=st.integers(2, 700), channels=st.sampled_from([1, 3, 16, 37, 600]),
       activation=st.sampled_from([None, "relu", "relu6"]), seed=st.integers(0, 2**16))
def test_batch_norm_rows_match_reference(dtype, rows, channels, activation, seed):
    """x (M, C, 1), the channels-last kernels (blocks of rows, tiled per-channel vectors, shifted one-pass
    statistics), against the reference: whole blocks, a partial last block, fewer rows than one block."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, channels, 1)) * rng.uniform(0.1, 10, (1, channels, 1)) + 50  # far from 0
    gamma, beta = rng.uniform(0.5, 2, channels), rng.standard_normal(channels)
    cast = [a.astype(dtype) for a in (x, gamma, beta)]
    tol = TOL[dtype] if dtype == np.float64 else dict(rtol=2e-3, atol=2e-3)
    z, mean, invstd, var = ref_bn.batch_norm_train_forward(x, gamma, beta, 1e-3)
    y, got_mean, got_invstd, got_var = cpu_bn.batch_norm_train_forward(*cast, 1e-3, activation=activation)
    for label, g, e in (("y", y, ACTIVATIONS[activation](z)), ("mean", got_mean, mean), ("invstd", got_invstd, invstd),
                        ("var", got_var, var)):
        assert g.dtype == dtype, label
        np.testing.assert_allclose(g, e, err_msg=label, **tol)

    dy = rng.standard_normal(x.shape)
    dz = dy if activation is None else dy * ((y > 0) & (y < (6 if activation == "relu6" else np.inf)))
    expected = ref_bn.batch_norm_backward(dz, x, gamma, mean, invstd, True, True, True)
    for beta_given in (None, cast[2]):  # the mask read from y, or recomputed from x (γ x̂ + β)
        got = cpu_bn.batch_norm_backward(dy.astype(dtype), cast[0], cast[1], got_mean, got_invstd, True, True, True,
                                         y3=y, activation=activation, beta=beta_given)
        for label, g, e in zip(("dx", "dgamma", "dbeta"), got, expected):
            np.testing.assert_allclose(g, e, err_msg=label, **tol)
    z_eval = ref_bn.batch_norm_eval_forward(x, gamma, beta, mean, var, 1e-3)
    y_eval = cpu_bn.batch_norm_eval_forward(*cast, mean.astype(dtype), var.astype(dtype), 1e-3, activation)
    np.testing.assert_allclose(y_eval, ACTIVATIONS[activation](z_eval), **tol)


@settings(deadline=None, max_examples=10)
@given(shape=st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 3), st.integers(1, 4)),
       seed=st.integers(0, 2**16))
def test_batch_norm_last_axis_gradients(shape, seed):
    assume(shape[0] * shape[1] * shape[2] > 1)
    rng = np.random.default_rng(seed)
    C = shape[3]

    def fn(x, gamma, beta):  # what BatchNormalization(axis=-1) runs: the (N·H·W, C) rows
        rows = batch_norm_activation(x.reshape(-1, C), None, None, gamma, beta, training=True, activation="relu6")
        return rows.reshape(x.shape)
    check_gradients(fn, [rng.standard_normal(shape) + 1, rng.uniform(0.5, 2, C), rng.standard_normal(C)])


# ---------------------------------------------------------------------- layers and the plate regressor

def _twins(make, shape_first):
    """A layer built channels first and its channels-last twin holding the same weights."""
    first, last = make("channels_first"), make("channels_last")
    first.build(shape_first)
    N, C, H, W = shape_first
    last.build((N, H, W, C))
    first.built = last.built = True
    for name in ("kernel", "bias"):
        if getattr(first, name, None) is not None:
            getattr(last, name).data[...] = getattr(first, name).data
    return first, last


@pytest.mark.parametrize("make", [
    lambda df: layers.Conv2D(5, 3, strides=2, padding="same", activation="relu", data_format=df),
    lambda df: layers.Conv2D(3, 1, activation="tanh", data_format=df),
    lambda df: layers.DepthwiseConv2D(3, strides=2, padding="same", data_format=df),
    lambda df: layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, data_format=df),
    lambda df: layers.Conv2D(4, 3, groups=2, dilation_rate=2, data_format=df),
], ids=["conv-relu", "pointwise-tanh", "depthwise-s2", "depthwise-x2", "grouped"])
def test_layers_match_channels_first(make):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 9, 8)).astype(np.float32)
    first, last = _twins(make, x.shape)
    xf, xl = tinycnn.Tensor(x, requires_grad=True), tinycnn.Tensor(to_last(x), requires_grad=True)
    yf, yl = first(xf), last(xl)
    np.testing.assert_allclose(yl.numpy(), to_last(yf.numpy()), rtol=1e-5, atol=1e-5)
    dy = rng.standard_normal(yf.shape).astype(np.float32)
    (yf * tinycnn.Tensor(dy)).sum().backward()
    (yl * tinycnn.Tensor(to_last(dy))).sum().backward()
    np.testing.assert_allclose(xl.grad, to_last(xf.grad), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(last.kernel.grad, first.kernel.grad, rtol=1e-4, atol=1e-4)


def test_batch_norm_and_pooling_match_channels_first():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 5, 6, 7)).astype(np.float32)
    first, last = layers.BatchNormalization(activation="relu6"), layers.BatchNormalization(activation="relu6", axis=-1)
    np.testing.assert_allclose(last(tinycnn.Tensor(to_last(x))).numpy(), to_last(first(tinycnn.Tensor(x)).numpy()),
                               rtol=1e-5, atol=1e-5)
    for name in ("moving_mean", "moving_variance"):
        np.testing.assert_allclose(getattr(last, name).numpy(), getattr(first, name).numpy(), rtol=1e-5)
    pooled = layers.GlobalAveragePooling2D(data_format="channels_last")(tinycnn.Tensor(to_last(x)))
    np.testing.assert_allclose(pooled.numpy(), layers.GlobalAveragePooling2D()(tinycnn.Tensor(x)).numpy(), rtol=1e-5)
    with pytest.raises(ValueError, match="axis"):
        layers.BatchNormalization(axis=2)


def test_sequential_refuses_channels_last_layers():
    """Sequential transposes its (N, H, W, C) arrays to NCHW: a channels-last layer in it would read the
    wrong axis as the channels, so it is a clear error instead."""
    with pytest.raises(ValueError, match="channels-last"):
        tinycnn.Sequential([layers.Conv2D(4, 3, data_format="channels_last", input_shape=(8, 8, 3))])
    with pytest.raises(ValueError, match="channels-last"):
        tinycnn.Sequential([layers.Conv2D(4, 3, input_shape=(8, 8, 3)), layers.BatchNormalization(axis=-1)])


def test_plate_regressor_same_in_both_layouts():
    """The channels-last regressor (the default) and a channels-first one with the same weights: the same
    outputs and gradients in training, the same folded predictions at inference; a saved model loads in
    either layout."""
    from tasks.plates_models import PlateBoxRegressor
    tinycnn.manual_seed(7)
    rng = np.random.default_rng(7)
    last, first = PlateBoxRegressor(width=0.5, dropout=0.0), PlateBoxRegressor(width=0.5, dropout=0.0,
                                                                                  data_format="channels_first")
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    first(tinycnn.Tensor(x))
    _with_trained_batch_norms(last, tinycnn.Tensor(x), rng)
    first.load_state_dict(last.state_dict())
    outputs = []
    for model in (last, first):
        out = model(tinycnn.Tensor(x))
        out.sum().backward()
        outputs.append((out.numpy(), model.stem.conv.kernel.grad.copy()))
    np.testing.assert_allclose(outputs[0][0], outputs[1][0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(outputs[0][1], outputs[1][1], rtol=1e-3, atol=1e-4)
    last.eval(), first.eval()
    with tinycnn.no_grad():
        np.testing.assert_allclose(last(tinycnn.Tensor(x)).numpy(), first(tinycnn.Tensor(x)).numpy(),
                                   rtol=1e-4, atol=1e-5)
    assert last.get_config()["data_format"] == "channels_last"


# ---------------------------------------------------------------------- GEMM along a long inner dimension

@pytest.mark.parametrize("m, k, n", [(3, 5000, 2), (16, 65536, 27), (7, 4000, 9)])
def test_gemm_split_along_the_inner_dimension(m, k, n, monkeypatch):
    """dW = dyᵀ x over many pixels: the product is cut along k, each thread's partial product added (three
    pieces, whatever this machine's thread count)."""
    monkeypatch.setattr(gemm._threads, "num_threads", lambda: 3)
    monkeypatch.setattr(gemm, "MIN_FLOPS_PER_THREAD", 1.0)
    calls = []
    original = gemm._split_reduction
    monkeypatch.setattr(gemm, "_split_reduction", lambda *a: calls.append(a[3]) or original(*a))
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((k, m)).astype(np.float32).T, rng.standard_normal((k, n)).astype(np.float32)
    expected = a.astype(np.float64) @ b.astype(np.float64)
    np.testing.assert_allclose(gemm.matmul(a, b), expected, rtol=1e-4, atol=1e-3 * np.sqrt(k))
    assert calls == [3]


@pytest.mark.parametrize("shape", [(16, 3, 128, 128), (2, 64, 33, 17), (1, 1, 3, 3)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_layout_swaps_match_numpy(shape, dtype):
    """NCHW <-> NHWC transposes (parallel kernels above a size; NumPy below it), and any other order."""
    from tinycnn.kernels.cpu import elementwise
    a = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    for axes in ((0, 2, 3, 1), (0, 3, 1, 2), (1, 0, 2, 3)):
        got = elementwise.transpose(a, axes)
        assert got.dtype == dtype and got.flags.c_contiguous
        np.testing.assert_array_equal(got, a.transpose(axes))
    np.testing.assert_array_equal(elementwise.transpose(np.asfortranarray(a), (0, 2, 3, 1)), a.transpose(0, 2, 3, 1))

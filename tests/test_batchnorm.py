"""batch_norm: gradients against finite differences (training and eval, (N, C) and (N, C, H, W), with and
without affine), the CPU kernels against the NumPy reference, the running statistics against PyTorch's
update formula, and the argument checks."""
import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from tinycnn import Tensor
from tinycnn.functional import batch_norm
from tinycnn.kernels.cpu import batchnorm as cpu
from tinycnn.kernels.reference import batchnorm as ref

from gradcheck import check_gradients

FAST = settings(deadline=None, max_examples=15)
GRAD = settings(deadline=None, max_examples=10)  # finite differences: a few hundred calls each
seeds = st.integers(0, 2 ** 31 - 1)
input_shapes = st.one_of(
    st.tuples(st.integers(1, 4), st.integers(1, 5)),                                          # (N, C)
    st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 3), st.integers(1, 3)),   # (N, C, H, W)
)


def values_per_channel(shape):
    return int(np.prod(shape)) // shape[1]


def tolerances(dtype):
    return dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------- gradients

@GRAD
@given(shape=input_shapes, affine=st.booleans(), eps=st.sampled_from([1e-5, 1e-3]), seed=seeds)
def test_training_gradients(shape, affine, eps, seed):
    assume(values_per_channel(shape) >= 2)
    rng = np.random.default_rng(seed)
    C = shape[1]
    x = rng.standard_normal(shape) * rng.uniform(0.5, 3) + rng.uniform(-2, 2)
    if affine:
        arrays = [x, rng.uniform(0.5, 2, C), rng.standard_normal(C)]
        fn = lambda x, w, b: batch_norm(x, None, None, w, b, training=True, eps=eps)  # noqa: E731
    else:
        arrays = [x]
        fn = lambda x: batch_norm(x, None, None, training=True, eps=eps)  # noqa: E731
    check_gradients(fn, arrays, rtol=1e-4, atol=1e-6)


@GRAD
@given(shape=input_shapes, seed=seeds)
def test_training_gradients_with_running_statistics_given(shape, seed):
    """Passing running statistics (updated on every call) changes neither the output nor its gradient."""
    assume(values_per_channel(shape) >= 2)
    rng = np.random.default_rng(seed)
    C = shape[1]
    running_mean, running_var = Tensor(np.zeros(C)), Tensor(np.ones(C))
    fn = lambda x, w: batch_norm(x, running_mean, running_var, w, None, training=True)  # noqa: E731
    check_gradients(fn, [rng.standard_normal(shape), rng.uniform(0.5, 2, C)], rtol=1e-4, atol=1e-6)


@FAST
@given(shape=input_shapes, affine=st.booleans(), seed=seeds)
def test_eval_gradients(shape, affine, seed):
    rng = np.random.default_rng(seed)
    C = shape[1]
    running_mean, running_var = Tensor(rng.standard_normal(C)), Tensor(rng.uniform(0.2, 3, C))
    if affine:
        arrays = [rng.standard_normal(shape), rng.uniform(0.5, 2, C), rng.standard_normal(C)]
        fn = lambda x, w, b: batch_norm(x, running_mean, running_var, w, b, training=False)  # noqa: E731
    else:
        arrays = [rng.standard_normal(shape)]
        fn = lambda x: batch_norm(x, running_mean, running_var, training=False)  # noqa: E731
    check_gradients(fn, arrays)


def test_gradient_of_the_affine_parameters_only():
    rng = np.random.default_rng(3)
    x = Tensor(rng.standard_normal((4, 2, 3, 3)))
    w, b = Tensor(np.array([1.5, -0.5]), requires_grad=True), Tensor(np.zeros(2), requires_grad=True)
    dy = rng.standard_normal((4, 2, 3, 3))
    batch_norm(x, None, None, w, b, training=True).backward(dy)
    x3 = x.numpy().reshape(4, 2, 9)
    _, mean, invstd, _ = ref.batch_norm_train_forward(x3, np.ones(2), np.zeros(2), 1e-5)
    _, dgamma, dbeta = ref.batch_norm_backward(dy.reshape(4, 2, 9), x3, w.numpy(), mean, invstd, True, True, True)
    np.testing.assert_allclose(w.grad, dgamma, rtol=1e-10)
    np.testing.assert_allclose(b.grad, dbeta, rtol=1e-10)
    assert x.grad is None


# ---------------------------------------------------------------------- CPU kernels against the reference

kernel_shapes = st.tuples(st.integers(1, 4), st.integers(1, 6), st.integers(1, 12))


@FAST
@given(shape=kernel_shapes, dtype=st.sampled_from([np.float32, np.float64]), seed=seeds)
def test_train_forward_and_backward_kernels_match_reference(shape, dtype, seed):
    assume(shape[0] * shape[2] >= 2)
    rng = np.random.default_rng(seed)
    C = shape[1]
    x3 = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
    gamma, beta = rng.uniform(0.5, 2, C).astype(dtype), rng.standard_normal(C).astype(dtype)
    dy3 = rng.standard_normal(shape).astype(dtype)
    got = cpu.batch_norm_train_forward(x3, gamma, beta, 1e-5)
    want = ref.batch_norm_train_forward(x3.astype(np.float64), gamma, beta, 1e-5)
    for g, w, name in zip(got, want, ("y3", "mean", "invstd", "var_unbiased")):
        assert g.dtype == dtype, name
        np.testing.assert_allclose(g, w, **tolerances(dtype), err_msg=name)
    mean, invstd = got[1], got[2]
    got = cpu.batch_norm_backward(dy3, x3, gamma, mean, invstd, True, True, True)
    want = ref.batch_norm_backward(dy3.astype(np.float64), x3.astype(np.float64), gamma, mean, invstd, True, True, True)
    for g, w, name in zip(got, want, ("dx3", "dgamma", "dbeta")):
        assert g.dtype == dtype, name
        np.testing.assert_allclose(g, w, rtol=1e-4 if dtype == np.float32 else 1e-9,
                                   atol=1e-4 if dtype == np.float32 else 1e-10, err_msg=name)


@FAST
@given(shape=kernel_shapes, dtype=st.sampled_from([np.float32, np.float64]), seed=seeds)
def test_eval_forward_kernel_matches_reference(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    C = shape[1]
    x3 = rng.standard_normal(shape).astype(dtype)
    gamma, beta, running_mean = (rng.standard_normal(C).astype(dtype) for _ in range(3))
    running_var = rng.uniform(0.1, 3, C).astype(dtype)
    got = cpu.batch_norm_eval_forward(x3, gamma, beta, running_mean, running_var, 1e-3)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, ref.batch_norm_eval_forward(x3, gamma, beta, running_mean, running_var, 1e-3),
                               **tolerances(dtype))


def test_backward_kernel_skips_what_is_not_needed():
    x3 = np.random.default_rng(0).standard_normal((2, 3, 4))
    _, mean, invstd, _ = cpu.batch_norm_train_forward(x3, np.ones(3), np.zeros(3), 1e-5)
    dx3, dgamma, dbeta = cpu.batch_norm_backward(x3, x3, np.ones(3), mean, invstd, False, True, False)
    assert dx3 is None and dbeta is None and dgamma.shape == (3,)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_update_running_kernel_is_in_place(dtype):
    running = np.array([1.0, 2.0, 3.0], dtype)
    cpu.update_running(running, np.array([3.0, 2.0, -1.0], dtype), 0.25)
    np.testing.assert_allclose(running, ref.update_running(np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, -1.0]), 0.25))
    assert running.dtype == dtype


# ---------------------------------------------------------------------- running statistics and modes

@pytest.mark.parametrize("shape", [(6, 3), (3, 2, 4, 5)])
@pytest.mark.parametrize("momentum", [0.1, 0.3])
def test_running_statistics_follow_torchs_update(shape, momentum):
    rng = np.random.default_rng(4)
    C = shape[1]
    running_mean, running_var = Tensor(np.zeros(C, np.float32)), Tensor(np.ones(C, np.float32))
    mean_data, var_data = running_mean.data, running_var.data
    expected_mean, expected_var = np.zeros(C), np.ones(C)
    axes = (0,) + tuple(range(2, len(shape)))
    for _ in range(3):
        x = (rng.standard_normal(shape) * 2 + 3).astype(np.float32)
        batch_norm(Tensor(x), running_mean, running_var, training=True, momentum=momentum)
        # torch: running = (1 − momentum) · running + momentum · batch, with the unbiased batch variance
        expected_mean = (1 - momentum) * expected_mean + momentum * x.mean(axis=axes, dtype=np.float64)
        expected_var = (1 - momentum) * expected_var + momentum * x.var(axis=axes, ddof=1, dtype=np.float64)
    np.testing.assert_allclose(running_mean.numpy(), expected_mean, rtol=1e-5)
    np.testing.assert_allclose(running_var.numpy(), expected_var, rtol=1e-5)
    assert running_mean.data is mean_data and running_var.data is var_data  # updated in place


def test_training_normalises_with_the_batch_statistics():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 3, 4, 4)) * np.array([1, 5, 0.1]).reshape(1, 3, 1, 1) + 7
    w, b = np.array([2.0, 1.0, 0.5]), np.array([0.0, -1.0, 3.0])
    y = batch_norm(Tensor(x), None, None, Tensor(w), Tensor(b), training=True, eps=0.0).numpy()
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), b, atol=1e-10)
    np.testing.assert_allclose(y.std(axis=(0, 2, 3)), w, rtol=1e-10)


def test_eval_mode_uses_the_running_statistics_and_leaves_them_alone():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 2, 2))
    rm, rv = np.array([0.5, -1.0, 2.0]), np.array([4.0, 0.25, 1.0])
    w, b = np.array([1.0, 2.0, -1.0]), np.array([0.1, 0.2, 0.3])
    running_mean, running_var = Tensor(rm.copy()), Tensor(rv.copy())
    y = batch_norm(Tensor(x), running_mean, running_var, Tensor(w), Tensor(b), training=False, eps=1e-5)
    per_channel = lambda v: v.reshape(1, 3, 1, 1)  # noqa: E731
    expected = (x - per_channel(rm)) / np.sqrt(per_channel(rv) + 1e-5) * per_channel(w) + per_channel(b)
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12)
    np.testing.assert_array_equal(running_mean.numpy(), rm)
    np.testing.assert_array_equal(running_var.numpy(), rv)


def test_float32_stays_float32():
    x = Tensor(np.random.default_rng(7).standard_normal((4, 3)).astype(np.float32), requires_grad=True)
    w = Tensor(np.ones(3, np.float32), requires_grad=True)
    y = batch_norm(x, Tensor(np.zeros(3, np.float32)), Tensor(np.ones(3, np.float32)), w, training=True)
    assert y.dtype == np.float32
    (y * y).sum().backward()
    assert x.grad.dtype == np.float32 and w.grad.dtype == np.float32


# ---------------------------------------------------------------------- argument checks

def test_one_value_per_channel_in_training_is_an_error():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        batch_norm(Tensor(np.ones((1, 3))), None, None, training=True)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        batch_norm(Tensor(np.ones((1, 3, 1, 1))), Tensor(np.zeros(3)), Tensor(np.ones(3)), training=True)
    y = batch_norm(Tensor(np.ones((1, 3))), Tensor(np.zeros(3)), Tensor(np.ones(3)), training=False)
    assert y.shape == (1, 3)  # eval mode is fine with a single sample


def test_shape_and_type_errors_are_clear():
    x = Tensor(np.ones((2, 3, 4, 4)))
    with pytest.raises(ValueError, match=r"weight has shape \(4,\), expected \(3,\)"):
        batch_norm(x, None, None, Tensor(np.ones(4)), training=True)
    with pytest.raises(ValueError, match="running_mean"):
        batch_norm(x, Tensor(np.zeros(2)), Tensor(np.ones(3)), training=True)
    with pytest.raises(ValueError, match=r"\(5,\)"):
        batch_norm(Tensor(np.ones(5)), None, None, training=True)
    with pytest.raises(ValueError, match="eval mode"):
        batch_norm(x, None, None, training=False)
    with pytest.raises(TypeError, match="running_mean must be a Tensor"):
        batch_norm(x, np.zeros(3), np.ones(3), training=True)
    with pytest.raises(TypeError, match="float32"):
        batch_norm(x, None, None, Tensor(np.ones(3, np.float32)), training=True)


# ---------------------------------------------------------------------- batch norm + ReLU / ReLU6, fused

from tinycnn.ops.batchnorm import batch_norm_activation  # noqa: E402


@GRAD
@given(shape=input_shapes, activation=st.sampled_from(["relu", "relu6"]), training=st.booleans(), seed=seeds)
def test_fused_activation_gradients(shape, activation, training, seed):
    """activation(batch_norm(x)) as one op, training and eval: gradients against finite differences. γ up to 5
    and β in ±3 put values on both sides of ReLU6's kinks (0 and 6)."""
    assume(values_per_channel(shape) >= 2)
    rng = np.random.default_rng(seed)
    C = shape[1]
    running_mean, running_var = Tensor(rng.standard_normal(C)), Tensor(rng.uniform(0.5, 2, C))
    arrays = [rng.standard_normal(shape) * 2, rng.uniform(1, 5, C), rng.uniform(-3, 3, C)]

    def fn(x, w, b):
        return batch_norm_activation(x, running_mean, running_var, w, b, training=training, momentum=0.0,
                                     activation=activation)
    check_gradients(fn, arrays, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", ["relu", "relu6"])
def test_fused_activation_kernels_match_reference(activation, dtype):
    """The fused CPU kernels against the reference batch norm followed by the activation (forward) and the
    reference backward of dz = dy · act'(z) (backward)."""
    rng = np.random.default_rng(3)
    x3 = (rng.standard_normal((3, 4, 50)) * 2).astype(dtype)
    gamma, beta = rng.uniform(1, 5, 4).astype(dtype), rng.uniform(-3, 3, 4).astype(dtype)
    dy3 = rng.standard_normal(x3.shape).astype(dtype)
    top = np.inf if activation == "relu" else 6.0
    z, mean, invstd, _ = ref.batch_norm_train_forward(x3, gamma, beta, 1e-3)
    y3, *_ = cpu.batch_norm_train_forward(x3, gamma, beta, 1e-3, activation)
    np.testing.assert_allclose(y3, np.clip(z, 0, top), **tolerances(dtype))
    assert ((z > 0) & (z < top)).any() and (z < 0).any()
    dz = dy3 * ((z > 0) & (z < top))
    expected = ref.batch_norm_backward(dz, x3, gamma, mean, invstd, True, True, True)
    got = cpu.batch_norm_backward(dy3, x3, gamma, mean, invstd, True, True, True, y3=y3, activation=activation)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, **tolerances(dtype))
    running_var = rng.uniform(0.5, 2, 4).astype(dtype)
    z_eval = ref.batch_norm_eval_forward(x3, gamma, beta, mean, running_var, 1e-3)
    np.testing.assert_allclose(cpu.batch_norm_eval_forward(x3, gamma, beta, mean, running_var, 1e-3, activation),
                               np.clip(z_eval, 0, top), **tolerances(dtype))


@pytest.mark.parametrize("shape", [(3, 4, 50), (2, 3, 7), (150, 5, 1)])  # NCHW rows, short rows, channels last
@pytest.mark.parametrize("activation", ["relu", "relu6"])
def test_fused_backward_takes_the_same_mask_from_the_input(activation, shape):
    """Given beta, the backward takes act' from x · scale + shift (the forward's arithmetic) instead of reading
    the output: the same mask as the output's (one value masked differently would move its dx by γ·invstd·dy;
    the sums may round differently in the last bit)."""
    rng = np.random.default_rng(4)
    x3 = (rng.standard_normal(shape) * 2).astype(np.float32)
    gamma, beta = rng.uniform(1, 5, shape[1]).astype(np.float32), rng.uniform(-3, 3, shape[1]).astype(np.float32)
    dy3 = rng.standard_normal(shape).astype(np.float32)
    y3, mean, invstd, _ = cpu.batch_norm_train_forward(x3, gamma, beta, 1e-3, activation)
    y3 = y3.copy()  # (a workspace array)
    assert (y3 == 0).any() and (y3 > 0).any()
    from_output = cpu.batch_norm_backward(dy3, x3, gamma, mean, invstd, True, True, True, y3=y3, activation=activation)
    from_output = [a.copy() for a in from_output]
    from_input = cpu.batch_norm_backward(dy3, x3, gamma, mean, invstd, True, True, True, y3=np.full_like(y3, np.nan),
                                         activation=activation, beta=beta)
    for a, b in zip(from_output, from_input):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_sequential_fuses_batch_norm_and_relu6():
    """BatchNormalization then ReLU(6) in a Sequential model runs as the fused op: same output and gradients
    as BatchNormalization(activation="relu6"), and both saved and loaded with their configuration."""
    import tinycnn
    from tinycnn import layers
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((4, 6, 5, 3)) * 3).astype(np.float32)
    two = tinycnn.Sequential([layers.BatchNormalization(input_shape=(6, 5, 3)), layers.ReLU(6.0)])
    one = tinycnn.Sequential([layers.BatchNormalization(activation="relu6", input_shape=(6, 5, 3))])
    outs, grads = [], []
    for model in (two, one):
        model.train()
        t = Tensor(x.transpose(0, 3, 1, 2).copy(), requires_grad=True)
        y = model(t)
        (y * y).sum().backward()
        outs.append(y.numpy())
        grads.append(np.asarray(t.grad))
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-5, atol=1e-6)
    assert one.layers[0].get_config()["activation"] == "relu6"
    with pytest.raises(ValueError, match="activation"):
        layers.BatchNormalization(activation="tanh")

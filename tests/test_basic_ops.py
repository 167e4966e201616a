"""Gradients of the basic ops (tinycnn/ops/basic.py, ops/linear.py) against finite differences, their forward
values against NumPy, and the autograd engine's bookkeeping (shared nodes, accumulation, no_grad)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import tinycnn
from tinycnn import Tensor
from tinycnn.functional import linear
from tinycnn.ops import basic

from gradcheck import check_gradients

FAST = settings(deadline=None, max_examples=15)
seeds = st.integers(0, 2 ** 31 - 1)


def normal(rng, shape):
    return np.asarray(rng.standard_normal(shape))


def away_from_zero(rng, shape, low=0.5, high=2.0):
    return np.asarray(rng.uniform(low, high, shape) * rng.choice([-1.0, 1.0], shape))


def distinct(rng, shape):
    """Values at least 0.1 apart (no ties for max), shuffled."""
    size = int(np.prod(shape))
    return (rng.permutation(size) * 0.1 + rng.uniform(0, 0.01, size)).reshape(shape)


# ---------------------------------------------------------------------- arithmetic with broadcasting

BINARY = {
    "add": (lambda a, b: a + b, np.add),
    "sub": (lambda a, b: a - b, np.subtract),
    "mul": (lambda a, b: a * b, np.multiply),
    "div": (lambda a, b: a / b, np.divide),
}


@FAST
@given(op=st.sampled_from(sorted(BINARY)), seed=seeds,
       shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, min_side=1, max_side=3))
def test_binary_ops_broadcast_gradients(op, seed, shapes):
    fn, reference = BINARY[op]
    rng = np.random.default_rng(seed)
    a, b = normal(rng, shapes.input_shapes[0]), away_from_zero(rng, shapes.input_shapes[1])
    out = fn(Tensor(a), Tensor(b))
    assert out.shape == shapes.result_shape
    np.testing.assert_allclose(out.numpy(), reference(a, b), rtol=1e-12)
    check_gradients(fn, [a, b])


@FAST
@given(op=st.sampled_from(sorted(BINARY)), scalar=st.floats(0.5, 3.0), seed=seeds,
       shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=3))
def test_binary_ops_with_a_scalar_on_the_right(op, scalar, seed, shape):
    fn, reference = BINARY[op]
    x = away_from_zero(np.random.default_rng(seed), shape)
    np.testing.assert_allclose(fn(Tensor(x), scalar).numpy(), reference(x, scalar), rtol=1e-12)
    check_gradients(lambda t: fn(t, scalar), [x])


@FAST
@given(op=st.sampled_from(sorted(BINARY)), scalar=st.floats(0.5, 3.0), seed=seeds,
       shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=3))
def test_binary_ops_with_a_scalar_on_the_left(op, scalar, seed, shape):
    fn, reference = BINARY[op]
    x = away_from_zero(np.random.default_rng(seed), shape)
    np.testing.assert_allclose(fn(scalar, Tensor(x)).numpy(), reference(scalar, x), rtol=1e-12)
    check_gradients(lambda t: fn(scalar, t), [x])


def test_zero_dim_tensor_keeps_its_shape():
    x = Tensor(np.array(2.5))
    assert x.shape == ()
    assert (x * Tensor(np.ones((2, 3)))).shape == (2, 3)


def test_neg_gradient():
    x = np.random.default_rng(0).standard_normal((2, 3))
    np.testing.assert_array_equal((-Tensor(x)).numpy(), -x)
    check_gradients(lambda t: -t, [x])


# ---------------------------------------------------------------------- elementwise functions

@FAST
@given(p=st.sampled_from([2, 3, 0.5, -1, 1.5, -0.5]), seed=seeds,
       shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=3))
def test_pow_gradient(p, seed, shape):
    x = np.random.default_rng(seed).uniform(0.5, 2.0, shape)
    np.testing.assert_allclose((Tensor(x) ** p).numpy(), x ** p, rtol=1e-12)
    check_gradients(lambda t: t ** p, [x])


def test_pow_rejects_a_tensor_exponent():
    with pytest.raises(TypeError):
        basic.pow(Tensor(np.ones(2)), Tensor(np.ones(2)))


UNARY = {
    "exp": (lambda t: t.exp(), np.exp, lambda rng, s: rng.uniform(-2, 2, s)),
    "log": (lambda t: t.log(), np.log, lambda rng, s: rng.uniform(0.3, 3, s)),
    "sqrt": (lambda t: t.sqrt(), np.sqrt, lambda rng, s: rng.uniform(0.3, 3, s)),
}


@FAST
@given(op=st.sampled_from(sorted(UNARY)), seed=seeds, shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=3))
def test_unary_gradients(op, seed, shape):
    fn, reference, draw = UNARY[op]
    x = draw(np.random.default_rng(seed), shape)
    np.testing.assert_allclose(fn(Tensor(x)).numpy(), reference(x), rtol=1e-12)
    check_gradients(fn, [x])


# ---------------------------------------------------------------------- matmul and linear

@FAST
@given(n=st.integers(1, 4), k=st.integers(1, 4), m=st.integers(1, 4), seed=seeds)
def test_matmul_gradient(n, k, m, seed):
    rng = np.random.default_rng(seed)
    a, b = normal(rng, (n, k)), normal(rng, (k, m))
    np.testing.assert_allclose((Tensor(a) @ Tensor(b)).numpy(), a @ b, rtol=1e-12)
    check_gradients(lambda x, y: x @ y, [a, b])


def test_matmul_shape_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 3\)"):
        Tensor(np.ones((2, 3))) @ Tensor(np.ones((2, 3)))
    with pytest.raises(ValueError, match="2-D"):
        Tensor(np.ones(3)) @ Tensor(np.ones((3, 1)))


@FAST
@given(n=st.integers(1, 4), i=st.integers(1, 5), o=st.integers(1, 4), bias=st.booleans(), seed=seeds)
def test_linear_gradient(n, i, o, bias, seed):
    rng = np.random.default_rng(seed)
    arrays = [normal(rng, (n, i)), normal(rng, (o, i))] + ([normal(rng, (o,))] if bias else [])
    expected = arrays[0] @ arrays[1].T + (arrays[2] if bias else 0)
    np.testing.assert_allclose(linear(*[Tensor(a) for a in arrays]).numpy(), expected, rtol=1e-12)
    check_gradients(linear, arrays)


def test_linear_gradient_of_the_weight_only():
    rng = np.random.default_rng(1)
    x, w = Tensor(normal(rng, (3, 2))), Tensor(normal(rng, (4, 2)), requires_grad=True)
    linear(x, w).sum().backward()
    np.testing.assert_allclose(w.grad, np.ones((3, 4)).T @ x.numpy())
    assert x.grad is None


def test_linear_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="features"):
        linear(Tensor(np.ones((2, 3))), Tensor(np.ones((4, 2))))
    with pytest.raises(ValueError, match="bias"):
        linear(Tensor(np.ones((2, 3))), Tensor(np.ones((4, 3))), Tensor(np.ones(3)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_kernel_matches_reference(dtype):
    from tinycnn.kernels.cpu import linear as cpu
    from tinycnn.kernels.reference import linear as ref
    rng = np.random.default_rng(2)
    x, w, b, dy = (normal(rng, s).astype(dtype) for s in ((5, 7), (3, 7), (3,), (5, 3)))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    y = cpu.linear_forward(x, w, b)
    assert y.dtype == dtype
    np.testing.assert_allclose(y, ref.linear_forward(x, w, b), rtol=tol, atol=tol)
    needs = True, True, True
    for got, want in zip(cpu.linear_backward(dy, x, w, *needs), ref.linear_backward(dy, x, w, *needs)):
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


# ---------------------------------------------------------------------- shapes

@FAST
@given(shape=hnp.array_shapes(min_dims=1, max_dims=4, max_side=3), seed=seeds, data=st.data())
def test_reshape_flatten_transpose_gradients(shape, seed, data):
    x = normal(np.random.default_rng(seed), shape)
    new_shape = (-1,) + shape[:0] if len(shape) == 1 else (shape[0], -1)
    np.testing.assert_array_equal(Tensor(x).reshape(new_shape).numpy(), x.reshape(new_shape))
    check_gradients(lambda t: t.reshape(new_shape), [x])
    if len(shape) >= 2:
        start = data.draw(st.integers(1, len(shape) - 1), label="start_dim")
        np.testing.assert_array_equal(basic.flatten(Tensor(x), start).numpy(), x.reshape(shape[:start] + (-1,)))
        check_gradients(lambda t: basic.flatten(t, start), [x])
    axes = tuple(data.draw(st.permutations(range(len(shape))), label="axes"))
    np.testing.assert_array_equal(Tensor(x).transpose(axes).numpy(), np.transpose(x, axes))
    check_gradients(lambda t: t.transpose(axes), [x])


def test_reshape_errors():
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        Tensor(np.ones((2, 3))).reshape(4, 2)
    with pytest.raises(ValueError):
        Tensor(np.ones((2, 3))).reshape(4, -1)
    with pytest.raises(ValueError, match="permutation"):
        Tensor(np.ones((2, 3))).transpose(0, 0)


@FAST
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=3), keepdims=st.booleans(), seed=seeds,
       data=st.data())
def test_sum_and_mean_gradients(shape, keepdims, seed, data):
    x = normal(np.random.default_rng(seed), shape)
    axis = data.draw(st.none() | st.lists(st.integers(0, len(shape) - 1), min_size=1, unique=True).map(tuple),
                     label="axis")
    np.testing.assert_allclose(Tensor(x).sum(axis, keepdims).numpy(), x.sum(axis=axis, keepdims=keepdims))
    np.testing.assert_allclose(Tensor(x).mean(axis, keepdims).numpy(), x.mean(axis=axis, keepdims=keepdims))
    check_gradients(lambda t: t.sum(axis, keepdims), [x])
    check_gradients(lambda t: t.mean(axis, keepdims), [x])


@FAST
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=3), keepdims=st.booleans(), seed=seeds,
       data=st.data())
def test_max_gradient_without_ties(shape, keepdims, seed, data):
    x = distinct(np.random.default_rng(seed), shape)
    axis = data.draw(st.none() | st.integers(0, len(shape) - 1), label="axis")
    np.testing.assert_array_equal(Tensor(x).max(axis, keepdims).numpy(), x.max(axis=axis, keepdims=keepdims))
    check_gradients(lambda t: t.max(axis, keepdims), [x])


def test_max_gradient_goes_to_the_maximum():
    x = Tensor(np.array([[1.0, 5.0, 2.0], [7.0, 0.0, 3.0]]), requires_grad=True)
    x.max(axis=1).sum().backward()
    np.testing.assert_array_equal(x.grad, [[0, 1, 0], [1, 0, 0]])


@FAST
@given(n_parts=st.integers(1, 3), ndim=st.integers(1, 3), seed=seeds, data=st.data())
def test_cat_gradient(n_parts, ndim, seed, data):
    rng = np.random.default_rng(seed)
    axis = data.draw(st.integers(0, ndim - 1), label="axis")
    base = list(data.draw(hnp.array_shapes(min_dims=ndim, max_dims=ndim, max_side=3), label="shape"))
    arrays = []
    for _ in range(n_parts):
        base[axis] = data.draw(st.integers(1, 3))
        arrays.append(normal(rng, tuple(base)))
    fn = lambda *ts: tinycnn.cat(ts, axis=axis)  # noqa: E731
    np.testing.assert_array_equal(fn(*[Tensor(a) for a in arrays]).numpy(), np.concatenate(arrays, axis))
    check_gradients(fn, arrays)


def test_cat_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="cat"):
        tinycnn.cat([Tensor(np.ones((2, 3))), Tensor(np.ones((2, 4)))], axis=0)


INDICES = [
    (slice(1, None), slice(None, None, 2)),
    (0,),
    (slice(None), -1),
    ([0, 0, 2],),               # a repeated row: its gradient adds up
    (slice(None), [3, 1, 3]),
    (Ellipsis, 1),
    (np.array([True, False, True]),),
]


@FAST
@given(index=st.sampled_from(INDICES), seed=seeds)
def test_getitem_gradient(index, seed):
    x = normal(np.random.default_rng(seed), (3, 4))
    np.testing.assert_array_equal(Tensor(x)[index].numpy(), x[index])
    check_gradients(lambda t: t[index], [x])


def test_getitem_repeated_index_accumulates():
    x = Tensor(np.zeros(3), requires_grad=True)
    x[[0, 0, 2]].sum().backward()
    np.testing.assert_array_equal(x.grad, [2, 0, 1])


# ---------------------------------------------------------------------- the engine's bookkeeping

def test_a_node_used_twice_gets_both_gradients():
    x = Tensor(np.array([1.0, 2.0, -3.0]), requires_grad=True)
    y = x * 3.0
    (y * y + y).sum().backward()          # d/dx (9x² + 3x) = 18x + 3
    np.testing.assert_allclose(x.grad, 18 * x.numpy() + 3)
    check_gradients(lambda t: (t * t + t) * t - t / (t * t + 1.0), [np.array([0.3, -1.2, 2.0])])


def test_backward_accumulates_into_grad_across_calls():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    (x * x).sum().backward()
    (x * 5.0).sum().backward()
    np.testing.assert_allclose(x.grad, 2 * x.numpy() + 5)
    x.zero_grad()
    assert x.grad is None


def test_backward_with_an_explicit_gradient():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    (x * 2.0).backward(np.array([3.0, -1.0]))
    np.testing.assert_allclose(x.grad, [6.0, -2.0])


def test_backward_of_a_non_scalar_needs_a_gradient():
    with pytest.raises(RuntimeError, match="scalar"):
        (Tensor(np.ones(2), requires_grad=True) * 2.0).backward()


def test_no_grad_records_nothing():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    with tinycnn.no_grad():
        assert not tinycnn.is_grad_enabled()
        y = (x * x).sum()
    assert tinycnn.is_grad_enabled()
    assert not y.requires_grad and y._ctx is None
    with pytest.raises(RuntimeError):
        y.backward()
    assert x.grad is None


def test_inputs_without_requires_grad_get_no_gradient():
    a = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    b = Tensor(np.array([3.0, 4.0]))
    (a * b).sum().backward()
    np.testing.assert_allclose(a.grad, [3.0, 4.0])
    assert b.grad is None


def test_float32_stays_float32_through_ops_and_gradients():
    x = Tensor(np.ones((2, 3), np.float32), requires_grad=True)
    y = ((x * 2.0 + 1.0) / 3.0).exp().sum()
    assert y.dtype == np.float32
    y.backward()
    assert x.grad.dtype == np.float32

"""CUDA kernels of the basic families (elementwise, reduce, linear) against the CPU kernels, on the same random
inputs. Without a GPU they run in numba's CUDA simulator (tests/conftest.py), where the block and tile sizes
are tiny (kernels/cuda/_launch.py), so these small shapes already span several blocks, partial tiles and
split-K slices. TINYCNN_REAL_CUDA=1 runs them on the GPU.

Tolerances: float32 results are compared with the CPU kernel run in float64 on the same inputs, within a few
float32 roundings of the result's scale; float64 results within a few float64 roundings."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp
from numba import cuda

from tinycnn.kernels.cpu import elementwise as cpu_e, linear as cpu_lin, reduce as cpu_r
from tinycnn.kernels.cuda import _launch as gpu, elementwise as E, linear as LIN, reduce as R

pytestmark = [pytest.mark.skipif(not cuda.is_available(), reason="no CUDA device or simulator"),
              pytest.mark.filterwarnings("error::numba.cuda.core.errors.NumbaPerformanceWarning")]

FAST = settings(deadline=None, max_examples=6)
seeds = st.integers(0, 2**31 - 1)
dtypes = st.sampled_from([np.float32, np.float64])


def dev(a):
    return cuda.to_device(np.ascontiguousarray(a))


def host(a):
    return a.copy_to_host()


def assert_close(got, want, dtype, terms=1):
    """got (dtype) against a float64 result: within ~terms roundings of dtype at the result's scale."""
    eps = np.finfo(dtype).eps
    want = np.asarray(want, np.float64)
    scale = max(1.0, float(np.abs(want).max())) if want.size else 1.0
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_allclose(got, want, rtol=8 * eps * terms, atol=8 * eps * terms * scale)


def randn(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


# ------------------------------------------------------------------------------------------ elementwise

BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "maximum": np.maximum}


@FAST
@given(op=st.sampled_from(sorted(BINARY)), dtype=dtypes, seed=seeds, data=st.data())
def test_binary_broadcasting(op, dtype, seed, data):
    rng = np.random.default_rng(seed)
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=4, max_side=4))
    other = data.draw(hnp.broadcastable_shapes(shape, min_dims=0, max_dims=4, max_side=4))
    a, b = randn(rng, shape, dtype), randn(rng, other, dtype) + (3 if op == "div" else 0)
    got = host(getattr(E, op)(dev(a), dev(b)))
    assert_close(got, getattr(cpu_e, op)(a.astype(np.float64), b.astype(np.float64)), dtype)


@FAST
@given(op=st.sampled_from(sorted(BINARY)), scalar=st.floats(0.5, 3.0), left=st.booleans(), dtype=dtypes,
       seed=seeds)
def test_binary_with_a_python_number(op, scalar, left, dtype, seed):
    a = randn(np.random.default_rng(seed), (3, 5, 7), dtype)   # 105 elements: several grid-stride rounds
    fn = getattr(E, op)
    got = host(fn(scalar, dev(a)) if left else fn(dev(a), scalar))
    a64 = a.astype(np.float64)
    want = BINARY[op](np.float64(dtype(scalar)), a64) if left else BINARY[op](a64, np.float64(dtype(scalar)))
    assert_close(got, want, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unary_and_pow(dtype):
    rng = np.random.default_rng(1)
    a = randn(rng, (4, 9), dtype)
    pos = np.abs(a) + dtype(0.1)
    for name, x in (("neg", a), ("exp", a), ("log", pos), ("sqrt", pos), ("abs", a)):
        assert_close(host(getattr(E, name)(dev(x))), getattr(cpu_e, name)(x.astype(np.float64)), dtype)
    for p in (2, 3, 0.5, -1, 1.5):
        assert_close(host(E.pow_scalar(dev(pos), p)), pos.astype(np.float64) ** p, dtype, terms=4)
    assert_close(host(E.pow_scalar(dev(a), 2)), a.astype(np.float64) ** 2, dtype)
    special = np.array([0.0, -1.0, np.inf], dtype)
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(host(E.log(dev(special))), np.log(special))
        np.testing.assert_array_equal(host(E.sqrt(dev(special))), np.sqrt(special))


def test_creation_copies_and_casts():
    assert host(E.zeros((2, 3), np.float32)).tolist() == [[0, 0, 0]] * 2
    assert host(E.ones((4,), np.float64)).dtype == np.float64
    np.testing.assert_array_equal(host(E.full((3, 2), 2.5, np.float32)), np.full((3, 2), 2.5, np.float32))
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    d = dev(a)
    c = E.copy(d)
    np.testing.assert_array_equal(host(c), a)
    assert c.device_ctypes_pointer.value != d.device_ctypes_pointer.value if hasattr(c, "device_ctypes_pointer") \
        else host(c) is not a
    np.testing.assert_array_equal(host(E.astype(d, np.float64)), a.astype(np.float64))
    np.testing.assert_array_equal(host(E.asarray(a, np.float64)), a.astype(np.float64))
    np.testing.assert_array_equal(E.to_numpy(E.reshape(d, (4, 3))), a.reshape(4, 3))
    np.testing.assert_array_equal(host(E.zeros_like(d)), np.zeros_like(a))


@FAST
@given(shape=hnp.array_shapes(min_dims=1, max_dims=4, max_side=4), seed=seeds, data=st.data())
def test_transpose_slice_concatenate(shape, seed, data):
    rng = np.random.default_rng(seed)
    a = randn(rng, shape, np.float32)
    axes = data.draw(st.permutations(range(len(shape))))
    np.testing.assert_array_equal(host(E.transpose(dev(a), tuple(axes))), cpu_e.transpose(a, tuple(axes)))
    axis = data.draw(st.integers(0, len(shape) - 1))
    start = data.draw(st.integers(0, shape[axis]))
    stop = data.draw(st.integers(start, shape[axis]))
    np.testing.assert_array_equal(host(E.slice_axis(dev(a), axis, start, stop)), cpu_e.slice_axis(a, axis, start, stop))
    b = randn(rng, shape[:axis] + (2,) + shape[axis + 1:], np.float32)
    np.testing.assert_array_equal(host(E.concatenate([dev(a), dev(b), dev(a)], axis)),
                                  cpu_e.concatenate([a, b, a], axis))


@pytest.mark.parametrize("index", [1, (slice(None), 2), (Ellipsis, slice(1, None, 2)), (slice(None, None, -1), None, 0),
                                   (-1, slice(0, 3)), [2, 0, 2, 1], np.array([True, False, True, False])])
def test_getitem_and_its_gradient(index):
    rng = np.random.default_rng(2)
    a = randn(rng, (4, 3, 5), np.float32)
    got = host(E.getitem(dev(a), index))
    np.testing.assert_array_equal(got, cpu_e.getitem(a, index))
    g = randn(rng, got.shape, np.float32)
    assert_close(host(E.getitem_backward(dev(g), a.shape, index)),
                 cpu_e.getitem_backward(g.astype(np.float64), a.shape, index), np.float32)


def test_where_positive_sum_to_shape_isfinite():
    rng = np.random.default_rng(3)
    c = randn(rng, (3, 4, 5), np.float32)
    a, b = randn(rng, (3, 4, 5), np.float32), randn(rng, (4, 1), np.float32)
    np.testing.assert_array_equal(host(E.where_positive(dev(c), 0.0, 1.0)), cpu_e.where_positive(c, 0.0, 1.0))
    np.testing.assert_array_equal(host(E.where_positive(dev(c), dev(a), dev(b))), cpu_e.where_positive(c, a, b))
    np.testing.assert_array_equal(host(E.where_positive(dev(c), dev(a), 2.0)), cpu_e.where_positive(c, a, 2.0))
    for shape in [(3, 4, 5), (4, 5), (1, 4, 1), (5,), (1, 1, 1), ()]:
        assert_close(host(E.sum_to_shape(dev(c), shape)), cpu_e.sum_to_shape(c.astype(np.float64), shape),
                     np.float32, terms=10)
    assert E.isfinite_all(dev(c))
    c[1, 2, 3] = np.nan
    assert not E.isfinite_all(dev(c))
    c[1, 2, 3] = -np.inf
    assert not E.isfinite_all(dev(c))


# ------------------------------------------------------------------------------------------ reduce


@FAST
@given(shape=hnp.array_shapes(min_dims=1, max_dims=4, max_side=5), keepdims=st.booleans(), dtype=dtypes,
       seed=seeds, data=st.data())
def test_sum_and_max_over_axes(shape, keepdims, dtype, seed, data):
    a = randn(np.random.default_rng(seed), shape, dtype)
    axis = data.draw(st.one_of(st.none(), st.lists(st.integers(0, len(shape) - 1), min_size=1, unique=True)
                               .map(lambda v: tuple(sorted(v)))))
    a64 = a.astype(np.float64)
    assert_close(host(R.sum(dev(a), axis, keepdims)), cpu_r.sum(a64, axis, keepdims), dtype, terms=a.size)
    np.testing.assert_array_equal(host(R.max(dev(a), axis, keepdims)), cpu_r.max(a, axis, keepdims))


@pytest.mark.parametrize("shape, axis", [((1, 300), (1,)), ((3, 200), (1,)), ((250, 2), (0,)), ((7, 40, 3), (0, 2)),
                                         ((500,), None)])
def test_long_reductions_use_slices(shape, axis):
    """More terms than 4 blocks of threads: the sliced two-pass reduction."""
    a = randn(np.random.default_rng(4), shape, np.float32)
    assert_close(host(R.sum(dev(a), axis, False)), cpu_r.sum(a.astype(np.float64), axis, False), np.float32,
                 terms=int(np.sqrt(a.size)) + 4)
    np.testing.assert_array_equal(host(R.max(dev(a), axis, True)), cpu_r.max(a, axis, True))


def test_argmax_and_integer_sums():
    rng = np.random.default_rng(5)
    a = randn(rng, (4, 6, 3), np.float32)
    a[1, 2, 0] = a[1, 4, 0] = 10.0  # a tie: the first wins
    for axis in (0, 1, 2, None):
        np.testing.assert_array_equal(host(R.argmax(dev(a), axis)), cpu_r.argmax(a, axis))
    i = rng.integers(-5, 5, (3, 4)).astype(np.int32)
    got = host(R.sum(dev(i), (1,), False))
    np.testing.assert_array_equal(got, i.sum(1))
    assert got.dtype == i.sum(1).dtype


# ------------------------------------------------------------------------------------------ linear


@FAST
@given(n=st.integers(1, 9), k=st.integers(1, 50), m=st.integers(1, 9), dtype=dtypes, seed=seeds)
def test_matmul(n, k, m, dtype, seed):
    rng = np.random.default_rng(seed)
    a, b = randn(rng, (n, k), dtype), randn(rng, (k, m), dtype)
    assert_close(host(LIN.matmul(dev(a), dev(b))), cpu_lin.matmul(a.astype(np.float64), b.astype(np.float64)),
                 dtype, terms=k)


@FAST
@given(n=st.integers(1, 9), i=st.integers(1, 45), o=st.integers(1, 9), bias=st.booleans(), dtype=dtypes,
       seed=seeds)
def test_linear_forward_backward(n, i, o, bias, dtype, seed):
    rng = np.random.default_rng(seed)
    x, w = randn(rng, (n, i), dtype), randn(rng, (o, i), dtype)
    b = randn(rng, (o,), dtype) if bias else None
    dy = randn(rng, (n, o), dtype)
    f64 = lambda v: None if v is None else v.astype(np.float64)  # noqa: E731
    got = host(LIN.linear_forward(dev(x), dev(w), None if b is None else dev(b)))
    assert_close(got, cpu_lin.linear_forward(f64(x), f64(w), f64(b)), dtype, terms=i)
    dx, dw, db = LIN.linear_backward(dev(dy), dev(x), dev(w), True, True, True)
    rx, rw, rb = cpu_lin.linear_backward(f64(dy), f64(x), f64(w), True, True, True)
    assert_close(host(dx), rx, dtype, terms=o)
    assert_close(host(dw), rw, dtype, terms=n)
    assert_close(host(db), rb, dtype, terms=n)
    assert LIN.linear_backward(dev(dy), dev(x), dev(w), False, True, False)[::2] == (None, None)


def test_split_k_is_used_for_long_products():
    """Few output tiles and a long K: the product is cut into K slices summed by a second kernel."""
    assert gpu.split_k(1, 1000)[0] > 1
    rng = np.random.default_rng(6)
    x, w, b = randn(rng, (3, 300), np.float32), randn(rng, (5, 300), np.float32), randn(rng, (5,), np.float32)
    assert_close(host(LIN.linear_forward(dev(x), dev(w), dev(b))),
                 cpu_lin.linear_forward(*(v.astype(np.float64) for v in (x, w, b))), np.float32, terms=40)


def test_host_arrays_are_refused():
    """A NumPy array passed to a kernel would be an implicit copy per launch: _launch refuses it."""
    with pytest.raises(TypeError, match="host array"):
        gpu.launch1d(E.fill_kernel, 4, np.zeros(4, np.float32), np.float32(1))

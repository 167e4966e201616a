"""kernels/cpu/gemm.py: the CPU kernels' GEMMs, split over tinycnn's threads, against np.matmul; NumPy's BLAS
thread setting given back after each call; and every BLAS call of a training step at one BLAS thread."""
import numba
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinycnn.kernels.cpu import gemm

FAST = settings(deadline=None, max_examples=25)


@pytest.fixture(scope="module")
def split_everything():
    """Split even tiny products, on 2 threads, so the pieces' bookkeeping is what the tests exercise."""
    saved, previous = gemm.MIN_FLOPS_PER_THREAD, numba.get_num_threads()
    gemm.MIN_FLOPS_PER_THREAD = 1e-9
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    yield
    gemm.MIN_FLOPS_PER_THREAD = saved
    numba.set_num_threads(previous)


@FAST
@given(st.integers(0, 2), st.integers(0, 2), st.integers(1, 5), st.integers(1, 40), st.integers(1, 9),
       st.integers(1, 70), st.sampled_from(["float32", "float64"]), st.booleans(), st.integers(0, 2 ** 31 - 1))
def test_matmul_matches_numpy(split_everything, a_stack, b_stack, batch, M, K, N, dtype, transposed, seed):
    """Stacked, broadcast and plain 2-D operands, transposed views, odd sizes: the same as np.matmul
    (bit for bit: each output element is one BLAS dot product either way)."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(((batch,) if a_stack else ()) + (M, K)).astype(dtype)
    b = rng.standard_normal(((batch,) if b_stack else ()) + (K, N)).astype(dtype)
    if transposed:  # a transposed view, as the conv backward passes Wᵀ
        a = np.ascontiguousarray(np.swapaxes(a, -1, -2)).swapaxes(-1, -2)
    expected = np.matmul(a, b)
    got = gemm.matmul(a, b)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    np.testing.assert_allclose(got, expected, rtol=1e-5 if dtype == "float32" else 1e-12, atol=1e-5)


def test_matmul_writes_into_out_views(split_everything):
    """out may be a slice of a bigger array (the im2col GEMM writes one group's rows of y): only it changes."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 4, 6)), rng.standard_normal((3, 6, 50))
    y = np.full((3, 10, 50), 7.0)
    result = gemm.matmul(a, b, out=y[:, 2:6])
    assert result.base is y or result is y[:, 2:6] or np.shares_memory(result, y)
    np.testing.assert_allclose(y[:, 2:6], a @ b, rtol=1e-12)
    assert (y[:, :2] == 7.0).all() and (y[:, 6:] == 7.0).all()


def test_ranges_cover_everything_once():
    for n in range(1, 100):
        for parts in (1, 2, 3, 8):
            for align in (1, 16):
                pieces = gemm._ranges(n, parts, align)
                covered = np.concatenate([np.arange(n)[r] for r in pieces])
                assert (covered == np.arange(n)).all()
                assert all(r.start % align == 0 for r in pieces) and len(pieces) <= parts


def test_blas_threads_are_given_back():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    before = [lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"]
    a = np.ones((64, 64), np.float32)
    gemm.matmul(a, a)
    after = [lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"]
    assert after == before


def test_errors_in_a_piece_reach_the_caller(split_everything):
    a, b = np.ones((4, 3, 5)), np.ones((4, 6, 2))  # inner dimensions differ
    with pytest.raises(ValueError):
        gemm.matmul(a, b)


def _mobilenet_mse(tinycnn, rng):
    from tinycnn.applications import MobileNetV2
    model = MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, classes=4, classifier_activation=None)
    model.compile(loss="mse", optimizer="adam")
    return model, rng.random((16, 32, 32, 3), np.float32), rng.random((16, 4), np.float32)


def _tutorial_bce(tinycnn, rng):
    from tinycnn import layers
    model = tinycnn.Sequential([
        layers.Conv2D(16, 3, activation="relu", input_shape=(28, 28, 1)), layers.MaxPooling2D(2),
        layers.Conv2D(16, 3, activation="relu"), layers.MaxPooling2D(2), layers.Flatten(),
        layers.Dense(16, activation="relu"), layers.Dense(1, activation="sigmoid")])
    model.compile(loss="binary_crossentropy", optimizer="adam")
    return model, rng.random((16, 28, 28, 1), np.float32), (rng.random((16, 1)) > 0.5).astype(np.float32)


def _unet_cross_entropy(tinycnn, rng):
    from tinycnn.tasks.plates_models import PlateSegmenter
    model = PlateSegmenter(filters=8, depth=2, upsample="transpose", convs_per_block=2, classes=2)
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
    return model, rng.random((8, 3, 32, 32), np.float32), rng.integers(0, 2, (8, 32, 32))


@pytest.mark.parametrize("build", [_mobilenet_mse, _tutorial_bce, _unet_cross_entropy],
                         ids=["mobilenet-mse", "tutorial-bce", "unet-cross-entropy"])
def test_training_calls_blas_only_where_held_at_one_thread(monkeypatch, build):
    """Every np.matmul and np.dot of a training epoch and a predict (a MobileNetV2 with the channels last:
    1×1 GEMMs, depthwise and batch norm, MSE; the tutorial's net: its convs, dense layers, BCE; the plate
    U-Net: transposed convs, concatenations, per-pixel cross-entropy; Adam) runs where tinycnn holds NumPy's
    BLAS at one thread: in a piece on its pool, or in a `one_blas_thread` block. A BLAS call on OpenBLAS's
    own threads leaves one spinning after it (unless tinycnn was imported before NumPy), taking a core from
    the kernels that follow."""
    import tinycnn
    from tinycnn.kernels.cpu import threads

    held = []

    def spy(real):
        def call(*args, **kwargs):
            held.append(bool(getattr(threads._local, "blas_held", False) or getattr(threads._local, "inside", False)))
            return real(*args, **kwargs)
        return call

    tinycnn.manual_seed(0)
    model, x, y = build(tinycnn, np.random.default_rng(0))
    monkeypatch.setattr(np, "matmul", spy(np.matmul))
    monkeypatch.setattr(np, "dot", spy(np.dot))
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    model.predict(x[:4], verbose=0)
    monkeypatch.undo()
    assert len(held) > 5 and all(held)

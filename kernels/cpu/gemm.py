"""GEMMs for the CPU kernels, split over threads by tinycnn itself.

    matmul(a, b, out=None)  ==  np.matmul(a, b, out=out)    a (..., M, K), b (..., K, N) -> (..., M, N)

Why not let OpenBLAS thread each GEMM itself: a training step alternates Numba's parallel kernels (on
Numba's OpenMP pool) with GEMMs many times over. OpenBLAS runs its GEMMs on a second pool whose threads spin
for a while after each call, waiting for more work, and so do OpenMP's: on a 2-core machine the spinning
threads of one pool took the cores from the working threads of the other, and a 2-thread training step ran
slower than a 1-thread one (2× on an idle machine, 8× under load; benchmarks/RESULTS.md, "Threads").
So the kernels' GEMMs come here: the product is cut into one piece per thread (along the stack of
matrices when there is one, else along the longer side of the output), each piece is a one-thread BLAS
call, and the pieces run on a small pool of Python threads that sleep on a queue between calls (NumPy
releases the GIL inside BLAS). OpenBLAS's own threads are never woken: it is held at one thread (via
threadpoolctl) for the duration of each call, and given back its setting afterwards, so user code's NumPy
in the same process keeps its usual threads. Measured on the 16 Winograd GEMMs of the tutorial's second
conv (64×64 @ 64×1,728 each), 2 threads: OpenBLAS's own 2 threads 1.53 ms, this 1.46 ms, one thread 2.93 ms.

The thread count is Numba's (`numba.get_num_threads()`, set by NUMBA_NUM_THREADS or
`tinycnn.set_num_threads`), so one setting governs every CPU kernel. Products under
MIN_FLOPS_PER_THREAD per thread are not worth waking a thread for and run in the caller.
"""
import math
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

MIN_FLOPS_PER_THREAD = 4e6  # ~40 µs of one core's SGEMM: below that the hand-off costs more than it saves
_COLUMN_ALIGN = 16          # column pieces start at multiples of 16 floats (a cache line)

_lock = threading.Lock()
_pool = None
_pool_size = 0
_blas = None


def matmul(a, b, out=None):
    """np.matmul(a, b, out=out) with the work split over Numba's thread count; returns out."""
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    shape = batch + (a.shape[-2], b.shape[-1])
    if out is None:
        out = np.empty(shape, np.result_type(a, b))
    flops = 2.0 * math.prod(shape) * a.shape[-1]
    threads = max(1, min(numba.get_num_threads(), int(flops // MIN_FLOPS_PER_THREAD)))
    with _one_blas_thread():
        if threads == 1:
            np.matmul(a, b, out=out)
        else:
            pieces = _pieces(a, b, out, threads)
            futures = [_executor(threads).submit(np.matmul, pa, pb, out=po) for pa, pb, po in pieces[1:]]
            np.matmul(*pieces[0][:2], out=pieces[0][2])  # the caller does the first piece itself
            for future in futures:
                future.result()
    return out


def _pieces(a, b, out, parts):
    """Cut the product into `parts` independent products (a_i, b_i, out_i) writing disjoint parts of out."""
    if out.ndim == 3 and out.shape[0] >= parts:  # along the stack: whole matrices per piece
        def take(m, r):
            return m[r] if m.ndim == 3 else m
        return [(take(a, r), take(b, r), out[r]) for r in _ranges(out.shape[0], parts, 1)]
    if out.shape[-2] > out.shape[-1]:  # along the rows of a and out
        return [(a[..., r, :], b, out[..., r, :]) for r in _ranges(out.shape[-2], parts, 1)]
    return [(a, b[..., :, r], out[..., :, r]) for r in _ranges(out.shape[-1], parts, _COLUMN_ALIGN)]


def _ranges(n, parts, align):
    """`parts` slices covering range(n), of nearly equal lengths, boundaries at multiples of `align`."""
    step = -(-n // parts)
    step = -(-step // align) * align
    return [slice(i, min(n, i + step)) for i in range(0, n, step)]


def _executor(threads):
    """The pool (threads − 1 workers: the caller is the other one), grown when more threads are asked for."""
    global _pool, _pool_size
    if _pool_size < threads - 1:
        with _lock:
            if _pool_size < threads - 1:
                _pool = ThreadPoolExecutor(max_workers=threads - 1, thread_name_prefix="tinycnn-gemm")
                _pool_size = threads - 1
    return _pool


class _one_blas_thread:
    """Hold NumPy's BLAS at one thread inside the block, then give it back its setting."""

    def __enter__(self):
        global _blas
        if _blas is None:
            from threadpoolctl import ThreadpoolController
            _blas = [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]
        self.saved = [lib.num_threads for lib in _blas]
        for lib in _blas:
            lib.set_num_threads(1)

    def __exit__(self, *exc):
        for lib, n in zip(_blas, self.saved):
            lib.set_num_threads(n)

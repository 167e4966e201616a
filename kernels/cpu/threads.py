"""tinycnn's own thread pool, for the CPU kernels whose parallel work includes BLAS calls.

    parallel_for(work, count)    work(i) for i in range(count), on Numba's thread count of threads
    parallel_range(work, count)  work(start, stop) over slices of range(count), the same way

Why a pool of our own: a training step alternates Numba's parallel kernels (on Numba's OpenMP pool) with
GEMMs many times over. Left to itself, OpenBLAS runs each GEMM on a second pool whose threads spin for a
while after each call, waiting for more work, and so do OpenMP's: on a 2-core machine the spinning threads
of one pool took the cores from the working threads of the other, and a 2-thread training step ran slower
than a 1-thread one (2× on an idle machine, 8× under load; benchmarks/RESULTS.md, "Threads"). So work that
calls BLAS runs here instead: each piece of work is a one-thread BLAS call or a serial `nogil` Numba kernel,
the pieces go to Python threads (which run them without the GIL, and sleep on a queue between calls), and
OpenBLAS is held at one thread meanwhile (via threadpoolctl; its setting is given back afterwards, so user
code's NumPy keeps its usual threads). The threads take the pieces one at a time from a shared counter,
so a thread slowed by other load on the machine simply takes fewer of them.

The thread count is Numba's (`numba.get_num_threads()`, set by NUMBA_NUM_THREADS or
`tinycnn.set_num_threads`): one setting governs every CPU kernel. Work already running on a pool thread
(a GEMM inside a parallel_for) runs serially where it is: the pool never waits on itself.
"""
import threading
from concurrent.futures import ThreadPoolExecutor

import numba

_lock = threading.Lock()
_local = threading.local()
_pool = None
_pool_size = 0
_blas = None


def num_threads():
    """How many threads a parallel_for may use here: Numba's count, or 1 inside a parallel_for already."""
    return 1 if getattr(_local, "inside", False) else numba.get_num_threads()


def parallel_for(work, count):
    """Run work(i) for every i in range(count), spread over num_threads() threads (the caller is one of
    them); returns when all are done. An exception in any piece is raised here, after the pieces already
    started finish (no new piece starts after it)."""
    threads = min(count, num_threads())
    with one_blas_thread():
        if threads <= 1:
            for i in range(count):
                work(i)
            return
        run = _Run(work, count)
        for _ in range(threads - 1):
            _executor(threads).submit(run.loop)
        run.loop()
        run.wait()


class _Run:
    """One parallel_for's pieces, taken one at a time by whichever threads come for them. The caller waits
    only for pieces that other threads took, never for a thread to wake up: when the work is short, the
    caller often does every piece itself before a sleeping worker is scheduled (tens of µs on a busy
    machine), and the worker that comes late finds nothing left and goes back to sleep."""

    def __init__(self, work, count):
        self.work, self.count = work, count
        self.next_piece, self.running, self.error = 0, 0, None
        self.finished = threading.Condition(threading.Lock())

    def _claim(self):
        """The next piece's index, or None when none is left (or a piece failed)."""
        with self.finished:
            if self.next_piece >= self.count or self.error is not None:
                return None
            self.next_piece += 1
            self.running += 1
            return self.next_piece - 1

    def loop(self):
        _local.inside = True
        try:
            while (i := self._claim()) is not None:
                error = None
                try:
                    self.work(i)
                except BaseException as exc:  # noqa: BLE001 (raised in the caller's thread by wait)
                    error = exc
                with self.finished:
                    self.running -= 1
                    if error is not None and self.error is None:
                        self.error = error
                    if self.running == 0:
                        self.finished.notify_all()
        finally:
            _local.inside = False

    def wait(self):
        """Return when no piece is running and none is left; raise the first piece's exception, if any."""
        with self.finished:
            while self.running:
                self.finished.wait()
        if self.error is not None:
            raise self.error


def parallel_range(work, count, pieces_per_thread=16):
    """Run work(start, stop) over contiguous slices that cover range(count): one call on one thread, else up
    to pieces_per_thread slices a thread, handed out as parallel_for hands out its pieces (so a thread slowed
    by other load takes fewer). For serial `nogil` Numba kernels over a range of planes: a `prange` loop
    costs each kernel about a second more to compile on an empty cache (Numba compiles its body once more,
    as a gufunc; benchmarks/RESULTS.md, "Cold start")."""
    threads = min(count, num_threads())
    if threads <= 1:
        if count > 0:
            work(0, count)
        return
    pieces = min(count, pieces_per_thread * threads)
    bounds = [count * i // pieces for i in range(pieces + 1)]
    parallel_for(lambda i: work(bounds[i], bounds[i + 1]), pieces)


SERIAL_BELOW = 1 << 20  # arrays of fewer values run on the caller's thread: waking tinycnn's threads (~50 µs)
# costs more than it saves, and a batch-1 predict stays on one thread (timings: benchmarks/RESULTS.md, "Cold start")


def on_threads(kernel, count, values, *args):
    """kernel(*args, start, stop) over range(count): one call when `values` (the size of the array the kernel
    goes over) is below SERIAL_BELOW, else ranges of it spread by parallel_range."""
    if values < SERIAL_BELOW:
        kernel(*args, 0, count)
    else:
        parallel_range(lambda start, stop: kernel(*args, start, stop), count)


def _executor(threads):
    """The pool (threads − 1 workers: the caller is the other one), grown when more threads are asked for."""
    global _pool, _pool_size
    if _pool_size < threads - 1:
        with _lock:
            if _pool_size < threads - 1:
                _pool = ThreadPoolExecutor(max_workers=threads - 1, thread_name_prefix="tinycnn")
                _pool_size = threads - 1
    return _pool


class one_blas_thread:
    """Hold NumPy's BLAS at one thread inside the block, then give it back its setting (nested blocks and
    blocks on pool threads leave it alone: the caller's outermost block owns the setting)."""

    def __enter__(self):
        global _blas
        self.owner = not (getattr(_local, "blas_held", False) or getattr(_local, "inside", False))
        if not self.owner:
            return
        if _blas is None:
            from threadpoolctl import ThreadpoolController
            _blas = [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]
        self.saved = [lib.num_threads for lib in _blas]
        for lib in _blas:
            lib.set_num_threads(1)
        _local.blas_held = True

    def __exit__(self, *exc):
        if self.owner:
            for lib, n in zip(_blas, self.saved):
                lib.set_num_threads(n)
            _local.blas_held = False

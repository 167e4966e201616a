"""tinycnn's own thread pool, for the CPU kernels whose parallel work includes BLAS calls.

    parallel_for(work, count)    work(i) for i in range(count), on Numba's thread count of threads
    parallel_range(work, count)  work(start, stop) over slices of range(count), the same way

Why a pool of our own: a training step alternates Numba's parallel kernels (on Numba's OpenMP pool) with
GEMMs many times over. Left to itself, OpenBLAS runs each GEMM on a second pool whose threads spin for a
while after each call, waiting for more work, and so do OpenMP's: on a 2-core machine the spinning threads
of one pool took the cores from the working threads of the other, and a 2-thread training step ran slower
than a 1-thread one (2× on an idle machine, 8× under load; benchmarks/RESULTS.md, "Threads"). So work that
calls BLAS runs here instead: each piece of work is a one-thread BLAS call or a serial `nogil` Numba kernel,
the pieces go to Python threads (which run them without the GIL; between calls a worker watches for the
next one for ~100 µs, outside the GIL, then sleeps on a queue), and OpenBLAS is held at one thread meanwhile
(via threadpoolctl; its setting is given back afterwards, so user code's NumPy keeps its usual threads). The
threads take the pieces one at a time from a shared counter, so a thread slowed by other load on the machine
simply takes fewer of them.

The thread count is Numba's (`numba.get_num_threads()`, set by NUMBA_NUM_THREADS or
`tinycnn.set_num_threads`): one setting governs every CPU kernel. Work already running on a pool thread
(a GEMM inside a parallel_for) runs serially where it is: the pool never waits on itself.
"""
import itertools
import platform
import queue
import threading

import numba
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.core.extending import intrinsic

_lock = threading.Lock()
_local = threading.local()
_jobs = queue.SimpleQueue()   # the runs the workers take, one put per worker wanted
_posted = np.zeros(1, np.int64)  # bumped after each put: what an idle worker watches before it sleeps
_workers = []
SPIN_PAUSES = 4000  # ~100 µs of `pause` here: how long an idle worker watches for the next run before it sleeps
_blas = None


def num_threads():
    """How many threads a parallel_for may use here: Numba's count, or 1 inside a parallel_for already."""
    return 1 if getattr(_local, "inside", False) else numba.get_num_threads()


def parallel_for(work, count):
    """Run work(i) for every i in range(count), spread over num_threads() threads (the caller is one of
    them); returns when all are done. An exception in any piece is raised here, after the others finish."""
    threads = min(count, num_threads())
    with one_blas_thread():
        if threads <= 1:
            for i in range(count):
                work(i)
            return
        run = _Run(work, count)
        _start_workers(threads - 1)
        for _ in range(threads - 1):
            _jobs.put(run)
        _posted[0] += 1
        run.loop(caller=True)
        run.wait()


class _Run:
    """One parallel_for's pieces, taken one at a time by whichever threads come for them. The caller waits
    for the pieces, never for a thread: when the work is short, the caller often does every piece itself
    before a sleeping worker is scheduled (tens of µs on a busy machine), and a worker that comes late finds
    nothing left and goes back to sleep. Cheap per piece and per call: the counters are itertools.count
    (next() on one is atomic under the GIL), and the caller waits on a plain lock that the worker finishing
    the last piece releases (a Condition per piece cost ~3 µs a piece, an Event per call ~5 µs). Before it
    sleeps on that lock, the caller watches the run's finished_flag for ~100 µs outside the GIL: the worker
    sets it once it has let go of the GIL, so the caller goes on at once instead of being woken (two
    82 µs pieces: 145 µs for the call when the caller slept, 109 µs with the watch)."""

    def __init__(self, work, count):
        self.work, self.count = work, count
        self.claims, self.finished = itertools.count(), itertools.count(1)
        self.errors, self.caller_finished_last = [], False
        self.done = threading.Lock()
        self.done.acquire()  # released by a worker that finishes the last piece
        self.finished_flag = np.zeros(1, np.int64)  # then set by that worker, outside the GIL (_work_forever)

    def loop(self, caller=False):
        """Run pieces until none is left; a worker that finished the last one gets the run's finished_flag
        back (to set outside the GIL), else None."""
        _local.inside = True
        flag = None
        try:
            while (i := next(self.claims)) < self.count:
                try:
                    self.work(i)
                except BaseException as exc:  # noqa: BLE001 (raised in the caller's thread by wait)
                    self.errors.append(exc)
                if next(self.finished) == self.count:
                    self.work = None  # no piece is left to run: let go of its arrays (a stale copy of this run
                    # may sit in the queue for a while; the workspace recycles only buffers nothing holds)
                    if caller:
                        self.caller_finished_last = True
                    else:
                        self.done.release()
                        flag = self.finished_flag
        finally:
            _local.inside = False
        return flag

    def wait(self):
        """Return when every piece is done; raise the first exception a piece raised, if any."""
        if not self.caller_finished_last:
            _watch(self.finished_flag, 0, SPIN_PAUSES, _NO_FLAG)  # a short watch outside the GIL, then sleep
            self.done.acquire()
        if self.errors:
            raise self.errors[0]


def parallel_range(work, count, pieces_per_thread=16, values=None):
    """Run work(start, stop) over contiguous slices that cover range(count): one call on one thread, else up
    to pieces_per_thread slices a thread, handed out as parallel_for hands out its pieces (so a thread slowed
    by other load takes fewer). For serial `nogil` Numba kernels over a range of planes: a `prange` loop
    costs each kernel about a second more to compile on an empty cache (Numba compiles its body once more,
    as a gufunc; benchmarks/RESULTS.md, "Cold start").

    values: the size of the array the work goes over, for a memory-bound kernel: below SERIAL_BELOW the work
    is one call on the caller's thread (each slice is a call of a Numba kernel from Python, a few µs)."""
    threads = min(count, num_threads())
    if threads <= 1 or (values is not None and values < SERIAL_BELOW):
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
    parallel_range(lambda start, stop: kernel(*args, start, stop), count, values=values)


def _start_workers(wanted):
    """Make sure `wanted` worker threads (the caller is one more) are waiting for runs on _jobs."""
    if len(_workers) < wanted:
        with _lock:
            while len(_workers) < wanted:
                worker = threading.Thread(target=_work_forever, name=f"tinycnn-{len(_workers)}", daemon=True)
                worker.start()
                _workers.append(worker)


def _work_forever():
    """A worker: the next run from _jobs, or, when there is none, a short watch of _posted outside the GIL
    (a kernel call's worth of time: a run posted meanwhile starts without the wake-up of a sleeping thread,
    tens of µs on a virtual machine), then sleep on the queue. The finished flag of the run whose last piece
    it ran is set at the start of that watch, once this thread has let go of the GIL (_Run.wait)."""
    finished = _NO_FLAG
    while True:
        seen = _posted[0]  # read before looking: a run put after the look bumps it after this read
        try:
            run = _jobs.get_nowait()
            _watch(_posted, seen, 0, finished)
        except queue.Empty:
            _watch(_posted, seen, SPIN_PAUSES, finished)
            run = _jobs.get()
        finished = run.loop()
        finished = _NO_FLAG if finished is None else finished
        del run  # not held while this worker waits for the next one


@intrinsic
def _load_acquire(typingctx, counter):
    """counter[0] of a 1-D int64 array, read from memory on every call (an atomic acquire load: a plain
    load of a value the loop never writes would be hoisted out of it)."""
    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.load_atomic(array.data, "acquire", 8)
    return types.int64(counter), codegen


@intrinsic
def _pause(typingctx):
    """x86's `pause` (a spin-wait hint that frees the core's pipeline for its sibling); elsewhere nothing."""
    def codegen(context, builder, signature, args):
        if platform.machine().lower() in ("x86_64", "amd64"):
            pause = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                                   "llvm.x86.sse2.pause")
            builder.call(pause, [])
        return context.get_dummy_value()
    return types.void(), codegen


@intrinsic
def _store_release(typingctx, flag, value):
    """flag[0] = value, an atomic release store: every write before it is seen before it."""
    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        builder.store_atomic(args[1], array.data, "release", 8)
        return context.get_dummy_value()
    return types.void(flag, value), codegen


_NO_FLAG = np.zeros(1, np.int64)  # a flag nobody watches


@njit(cache=True, nogil=True)
def _watch(counter, seen, pauses, finished):
    """Set finished[0] = 1 (the caller of the run this thread finished may be watching it: setting it here,
    outside the GIL, lets that caller go on at once, without waiting for the GIL), then return as soon as
    counter[0] differs from `seen`, or after `pauses` pauses; without the GIL."""
    _store_release(finished, np.int64(1))
    for _ in range(pauses):
        if _load_acquire(counter) != seen:
            return
        _pause()


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

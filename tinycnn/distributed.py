"""Data-parallel training over MPI: N processes (ranks), a copy of the model in each, every global batch split
between them, the gradients summed with one MPI Allreduce per step.

    mpiexec -n 2 python -m tinycnn.train catdog                      # the command line finds MPI by itself
    model.fit(x, y, batch_size=32, distributed=tinycnn.distributed.auto())     # the Keras-style API

`auto()` gives None in a process that mpiexec did not start with several ranks (then fit is the plain
single-process loop, and mpi4py is never imported), and otherwise this process's `DataParallel` context.
What fit does with one (docs/distributed.md has the commands):

* Start: rank 0 broadcasts the weights, buffers and optimizer state, so every rank starts equal. Ranks other
  than 0 re-seed the engine's random generator from it and their rank: their dropout masks and augmentations
  differ from rank 0's.
* Every epoch rank 0 draws the permutation and broadcasts it. `batch_size` is the global batch B: global
  batch b is `order[b·B:(b+1)·B]`, and rank r takes the r-th of N nearly equal contiguous slices of it.
* Rank r backpropagates its shard's mean loss times n_r / B (n_r its share of the batch), so the sum of the
  ranks' gradients is the gradient of the mean loss over the global batch, as one process computes it, for
  losses that are means over samples (cross-entropy with class weights or ignore_index normalises per shard,
  as PyTorch's DistributedDataParallel does).
* One flat buffer per step — [every gradient | has-gradient per parameter | n, loss·n, metric·n | one failure
  flag per rank] — goes through one Allreduce(SUM). Every rank then takes the same optimizer step, so
  the optimizer state stays identical without ever being sent. The logged loss and metrics are the global
  batch's; validation is sharded the same way and its sums reduced.
* Rank 0 alone prints and writes: the other ranks run with verbose=0 and skip the callbacks that write
  files (ModelCheckpoint, CSVLogger, and any callback with `rank_zero_only = True`). The others
  (EarlyStopping, learning-rate schedules) run on every rank with the same global logs.
* Batch norm normalises with each rank's own statistics by default (its shard is its batch), and at the end
  of every epoch the running statistics are averaged over the ranks. With `sync_bn` it uses the global
  batch's statistics instead, through the hook in tinycnn/ops/batchnorm.py: two small all-reduces per
  batch-norm layer and step, and the same numbers as one process.
* Faults: an exception in a rank's step sets its flag in the step's buffer, so every rank raises at the
  same point (the failing one its own error, the others `RankFailedError`). With sync_bn the others may
  wait inside a batch-norm all-reduce instead, so the failing rank aborts the job (MPI_Abort). An uncaught
  exception anywhere aborts the job too (sys.excepthook), and mpiexec ends the job when a rank is killed.
"""
import os
import sys
import traceback

import numpy as np

from .device import kernels_for

# Set by mpiexec (Open MPI), MPICH/Intel MPI (Hydra) and MVAPICH: the number of ranks of the job.
SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")


class RankFailedError(RuntimeError):
    """Another rank failed: this one stops too, at the same step."""


def launched_size():
    """The number of ranks mpiexec started (from its environment variables), 1 outside mpiexec."""
    for name in SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


_context = None


def auto(sync_bn=None):
    """This process's DataParallel context when mpiexec started several ranks, else None.

    There is one context per process (as there is one MPI world); `sync_bn` True/False sets whether batch
    norm uses the global batch's statistics, None leaves the setting as it is (False at first)."""
    global _context
    if launched_size() <= 1:
        return None
    if _context is None:
        _context = DataParallel(_mpi_world())
    if sync_bn is not None:
        _context.sync_bn = bool(sync_bn)
    return _context


def _mpi_world():
    try:
        from mpi4py import MPI
    except ImportError:
        raise RuntimeError(f"this process is one of {launched_size()} ranks started by mpiexec, but mpi4py is "
                           "not installed: pip install 'tinycnn[mpi]' (or run without mpiexec)") from None
    _abort_on_uncaught_exceptions(MPI.COMM_WORLD)
    return MPI.COMM_WORLD


def _abort_on_uncaught_exceptions(comm):
    """An uncaught exception on one rank would leave the others waiting forever in their next collective:
    print it, then MPI_Abort the whole job."""
    previous = sys.excepthook

    def abort(kind, value, tb):
        previous(kind, value, tb)
        sys.stderr.write(f"tinycnn.distributed: uncaught {kind.__name__} on rank {comm.Get_rank()}, "
                         f"aborting all {comm.Get_size()} ranks\n")
        sys.stdout.flush()
        sys.stderr.flush()
        comm.Abort(1)

    sys.excepthook = abort


def shard_bounds(n, rank, size):
    """[begin, end) of rank's part when n items are split between size ranks (sizes differ by at most 1)."""
    return n * rank // size, n * (rank + 1) // size


class SingleProcess:
    """What fit needs of a context, for one process: every batch whole, nothing to send."""

    rank, size, is_root, sync_bn = 0, 1, True, False

    def begin_fit(self, model, n_samples, batch_size):
        pass

    def end_fit(self):
        pass

    def callbacks_here(self, callbacks):
        return list(callbacks)

    def end_epoch(self, model):
        pass

    def broadcast(self, value):
        return value

    def same_order(self, order):
        return order

    def shard(self, index):
        return index

    def sum_step(self, local_step, n_stats):
        """Run the step (forward and backward: the gradients are left in `.grad`); its stats vector as it is."""
        return local_step()

    def sum_values(self, compute, n_values):
        return compute()

    def collectively(self, fn, *args):
        return fn(*args)

    def any(self, flag):
        return bool(flag)


class DataParallel:
    """Data-parallel training over an mpi4py communicator (the module's docstring says what each step does).
    It has SingleProcess's methods, which fit and evaluate call."""

    def __init__(self, comm, sync_bn=False):
        self.comm, self.sync_bn = comm, bool(sync_bn)
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.is_root = self.rank == 0
        node = comm.Split_type(_mpi().COMM_TYPE_SHARED)  # the ranks on this machine
        self.local_rank, self.local_size = node.Get_rank(), node.Get_size()
        node.Free()
        self.params, self.dtype, self._previous_sync = None, None, None
        _share_cores(self.local_size)

    def __repr__(self):
        return (f"DataParallel(rank {self.rank} of {self.size}, local rank {self.local_rank}, "
                f"sync_bn={self.sync_bn})")

    def use_local_gpu(self):
        """Make this rank's CUDA device the GPU numbered by its local rank (modulo the machine's GPUs).
        Call it before anything touches CUDA. Returns the GPU's number."""
        from numba import cuda
        gpus = len(cuda.gpus)
        if gpus == 0:
            raise RuntimeError(f"rank {self.rank}: --device cuda, but this machine has no CUDA GPU")
        cuda.select_device(self.local_rank % gpus)
        return self.local_rank % gpus

    # ------------------------------------------------------------------ start and end of fit
    def begin_fit(self, model, n_samples, batch_size):
        """Check the batch size; give every rank rank 0's weights, buffers and optimizer state, and its own
        random stream; with sync_bn, switch the batch-norm hook on."""
        self._check_batches(n_samples, batch_size)
        self.params = list(model.optimizer.params)
        self.dtype = np.result_type(*[p.dtype for p in self.params])
        self._broadcast_tensors([t for _, t in model.named_parameters()] + [t for _, t in model.named_buffers()])
        if hasattr(model.optimizer, "state_dict"):
            state = self.broadcast(model.optimizer.state_dict() if self.is_root else None)
            if not self.is_root:
                model.optimizer.load_state_dict(state)
        self._own_random_stream()
        if self.sync_bn:
            from .ops import batchnorm
            self._previous_sync, batchnorm.sync_sums = batchnorm.sync_sums, self.allreduce_sum

    def end_fit(self):
        if self.sync_bn:
            from .ops import batchnorm
            batchnorm.sync_sums = self._previous_sync
        self.params = None

    def _check_batches(self, n_samples, batch_size):
        if batch_size < self.size:
            raise ValueError(f"batch_size={batch_size} is the global batch: it must be at least the number of "
                             f"ranks ({self.size}), so that every rank gets a sample")
        smallest = min(batch_size, n_samples % batch_size or batch_size)
        if self.sync_bn and smallest < self.size:
            raise ValueError(f"sync_bn: the last batch has {smallest} sample(s) for {self.size} ranks, and every "
                             f"rank needs one; choose a batch size that leaves fewer of the {n_samples} samples "
                             "alone")

    def _broadcast_tensors(self, tensors):
        """One Bcast of one flat buffer: rank 0's values of `tensors` into every rank's."""
        dtype = np.result_type(*[t.dtype for t in tensors])
        buffer = _pack([t.data for t in tensors], [t.device for t in tensors], [t.shape for t in tensors], dtype)
        self.comm.Bcast(buffer, root=0)
        if not self.is_root:
            for t, view in zip(tensors, _views(buffer, [t.shape for t in tensors])):
                t.data = kernels_for(t.device).elementwise.asarray(view.copy(), t.dtype)
                t.grad = None

    def _own_random_stream(self):
        """Ranks > 0 re-seed the engine's generator (and NumPy's global one) from their current state and
        their rank; rank 0 keeps its stream, the one a single process with the same seed has."""
        if not self.is_root:
            from .random import manual_seed, next_seed
            seed = np.random.SeedSequence(next_seed(), spawn_key=(self.rank,)).generate_state(1, np.uint64)[0]
            manual_seed(int(seed))

    def end_epoch(self, model):
        """Without sync_bn each rank's batch-norm running statistics follow its own shards: replace them by
        their mean over the ranks (one Allreduce), so that validation and checkpoints see the same model on
        every rank. With sync_bn they are the same already."""
        buffers = [t for _, t in model.named_buffers()]
        if self.sync_bn or not buffers:
            return
        shapes = [t.shape for t in buffers]
        total = _pack([t.data for t in buffers], [t.device for t in buffers], shapes,
                      np.result_type(*[t.dtype for t in buffers]))
        self.comm.Allreduce(_mpi().IN_PLACE, total, op=_mpi().SUM)
        for t, view in zip(buffers, _views(total / self.size, shapes)):
            t.data = kernels_for(t.device).elementwise.asarray(view, t.dtype)

    def callbacks_here(self, callbacks):
        """Every callback on rank 0; on the others, those that do not write files."""
        from .callbacks import CSVLogger, ModelCheckpoint
        if self.is_root:
            return list(callbacks)
        return [cb for cb in callbacks
                if not isinstance(cb, (ModelCheckpoint, CSVLogger)) and not getattr(cb, "rank_zero_only", False)]

    # ------------------------------------------------------------------ collectives
    def broadcast(self, value):
        """Rank 0's value (any picklable object) on every rank."""
        return self.comm.bcast(value, root=0)

    def same_order(self, order):
        """Rank 0's permutation on every rank."""
        order = np.ascontiguousarray(order, dtype=np.int64)
        self.comm.Bcast(order, root=0)
        return order

    def shard(self, index):
        """This rank's contiguous part of `index` (an array or a range; the parts' sizes differ by at most 1)."""
        begin, end = shard_bounds(len(index), self.rank, self.size)
        return index[begin:end]

    def sum_step(self, local_step, n_stats):
        """Run this rank's step, then one Allreduce(SUM) of [gradients | has-gradient per parameter | stats |
        failure flags]: every parameter's `.grad` becomes the global gradient; returns the global stats."""
        try:
            stats, error = np.asarray(local_step(), np.float64), None
        except Exception as failure:
            if self.sync_bn:  # the others may wait in a batch-norm all-reduce that this rank will never join
                self._abort(failure)
            stats, error = np.zeros(n_stats), failure
        grads = [None if error is not None else p.grad for p in self.params]
        shapes = [p.shape for p in self.params]
        header = np.concatenate([[g is not None for g in grads], stats])
        buffer = _pack(grads, [p.device for p in self.params], shapes, self.dtype, extra=header.size + self.size)
        tail = buffer[len(buffer) - header.size - self.size:]
        tail[:header.size] = header
        tail[header.size + self.rank] = error is not None
        self.comm.Allreduce(_mpi().IN_PLACE, buffer, op=_mpi().SUM)
        self._raise_if_failed(tail[header.size:], error)
        has_grad = tail[:len(self.params)] > 0
        for p, view, present in zip(self.params, _views(buffer, shapes), has_grad):
            p.grad = kernels_for(p.device).elementwise.asarray(view, p.dtype) if present else None
        return tail[len(self.params):header.size].astype(np.float64)

    def sum_values(self, compute, n_values):
        """compute() on every rank, its vector of n_values numbers summed over the ranks (one Allreduce)."""
        try:
            values, error = np.asarray(compute(), np.float64), None
        except Exception as failure:
            values, error = np.zeros(n_values), failure
        return self._sum_checked(values, error)

    def collectively(self, fn, *args):
        """fn(*args) on every rank; if it raises on any rank, it raises on every rank."""
        try:
            result, error = fn(*args), None
        except Exception as failure:
            result, error = None, failure
        self._sum_checked(np.zeros(0), error)
        return result

    def any(self, flag):
        """True on every rank when flag is true on any."""
        return bool(self._sum_checked(np.array([float(bool(flag))]), None)[0] > 0)

    def allreduce_sum(self, array):
        """The element-wise sum of a float64 array over the ranks (the batch-norm hook)."""
        array = np.array(array, dtype=np.float64)
        self.comm.Allreduce(_mpi().IN_PLACE, array, op=_mpi().SUM)
        return array

    # ------------------------------------------------------------------ failures
    def _sum_checked(self, values, error):
        """values summed over the ranks, in one Allreduce with one failure flag per rank."""
        buffer = np.zeros(len(values) + self.size)
        buffer[:len(values)] = values
        buffer[len(values) + self.rank] = error is not None
        self.comm.Allreduce(_mpi().IN_PLACE, buffer, op=_mpi().SUM)
        self._raise_if_failed(buffer[len(values):], error)
        return buffer[:len(values)]

    def _raise_if_failed(self, flags, error):
        """Every rank has the same flags: if any is set, gather the failures' messages and raise everywhere
        (the failing rank its own error)."""
        failed = np.flatnonzero(flags)
        if len(failed) == 0:
            return
        messages = self.comm.allgather(None if error is None else f"{type(error).__name__}: {error}")
        if error is not None:
            raise error
        report = "; ".join(f"rank {r}: {messages[r]}" for r in failed)
        raise RankFailedError(f"rank {self.rank} stops because another rank failed ({report})")

    def _abort(self, error):
        sys.stderr.write(f"tinycnn.distributed: rank {self.rank} failed during a step with sync_bn; aborting "
                         f"all {self.size} ranks:\n" + "".join(traceback.format_exception(error)))
        sys.stdout.flush()
        sys.stderr.flush()
        self.comm.Abort(1)


# ---------------------------------------------------------------------- helpers

def _mpi():
    from mpi4py import MPI
    return MPI


def _pack(arrays, devices, shapes, dtype, extra=0):
    """One flat host buffer holding every array (copied from its device; None stays zeros), then `extra` zeros."""
    sizes = [int(np.prod(shape)) for shape in shapes]
    buffer = np.zeros(sum(sizes) + extra, dtype)
    offset = 0
    for a, device, size in zip(arrays, devices, sizes):
        if a is not None:
            buffer[offset:offset + size] = np.ravel(kernels_for(device).elementwise.to_numpy(a))
        offset += size
    return buffer


def _views(buffer, shapes):
    """The arrays that _pack put in `buffer`, as views of it."""
    views, offset = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        views.append(buffer[offset:offset + size].reshape(shape))
        offset += size
    return views


def _share_cores(local_size):
    """Unless NUMBA_NUM_THREADS says otherwise, give each rank its share of this machine's cores: the cores
    mpiexec bound it to, or the cores divided by the ranks here."""
    if "NUMBA_NUM_THREADS" in os.environ:
        return
    import numba
    cores, usable = os.cpu_count() or 1, len(os.sched_getaffinity(0))
    threads = usable if usable < cores else max(1, cores // local_size)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))

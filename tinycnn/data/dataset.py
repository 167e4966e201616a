"""A small, lazy input pipeline in the manner of tf.data: elements flow one at a time, decoded in worker threads,
so a photo folder of any size trains in bounded memory.

    from tinycnn.data import Dataset
    ds = (Dataset.from_tensor_slices((paths, labels))
          .shuffle(len(paths), seed=0)          # a new order every epoch, the same orders for the same seed
          .map(decode, num_parallel_calls=4)     # decode(path, label) -> (image, label), in 4 threads
          .batch(32)                             # (32, H, W, C), (32,); the last batch may be smaller
          .prefetch(2))                          # a background thread keeps 2 batches ready
    model.fit(ds, epochs=10)

An element is a NumPy array or a tuple of them (an image, or (image, label), or (image, label, weight)); `map`
passes a tuple's parts as separate arguments, as tf.data does. A Dataset is a recipe, not data: every
`iter(ds)` runs the pipeline again from its source (one epoch), so shuffling differs from epoch to epoch and
nothing is kept in memory except by `cache()`.

Steps (each returns a new Dataset; the original is unchanged):
- `map(fn, num_parallel_calls=AUTOTUNE)`: fn on every element, in a pool of threads (AUTOTUNE: as many as the
  cores this process may use, `len(os.sched_getaffinity(0))`; 1: in the calling thread), results in order.
  Threads pay off where fn releases the GIL: Pillow decoding and resizing, most NumPy work on big arrays.
- `shuffle(buffer_size, seed=None)`: a buffer of `buffer_size` elements, drawn from at random (buffer_size
  >= the number of elements gives a uniform shuffle). The epoch's generator is seeded from (seed, epoch
  number), so every epoch has another order and a run repeats exactly; seed=None draws each epoch's seed
  from tinycnn's generator (`tinycnn.manual_seed` makes it repeatable).
- `batch(batch_size, drop_remainder=False)`: stacks consecutive elements along a new first axis, part by part.
  Where the elements can be fetched by row number (`from_tensor_slices`, a `cache(path)` file of equally
  shaped elements, and `shuffle` right after either), shuffle permutes row numbers (no buffer of elements)
  and batch gathers each batch's rows in one indexing operation, as fit does with arrays.
- `prefetch(buffer_size)`: a background thread runs the pipeline above it and keeps up to buffer_size
  elements ready in a bounded queue, so decoding overlaps the training step.
- `cache()`: the first complete pass is kept in memory and replayed. `cache(path)`: the first iteration writes
  every element to the file `path` (with a progress bar; float parts that hold whole numbers in 0..255, such
  as decoded images, are stored as uint8), and `path.json` beside it; later iterations, and later runs, read
  it back through a memory map. The file is keyed on a fingerprint of the pipeline above it (for an image
  folder: every file's path, size and modification time, and the decoding settings; for arrays: their bytes;
  for map: the function's code), and written afresh when that changes. A `from_generator` source has no
  fingerprint: its cache file is reused as long as it exists.
- `take(n)`, `skip(n)`, `repeat(count=None)` (None: forever), `shard(num_shards, index)` (every num_shards-th
  element, starting at index).
- `len(ds)`: the number of elements where it is known (arrays, folders, and the steps above on them); a
  TypeError saying so where it is not (a generator, an endless repeat).

`distribute(num_shards, index)` is what `fit(..., distributed=...)` does to a Dataset under MPI: the same
pipeline with the shard taken right after the source, so that each rank reads and decodes only its own
elements, and each batch size divided between the ranks so that the global batch stays `batch_size`.
"""
import hashlib
import itertools
import math
import os
import queue
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

AUTOTUNE = -1
_END, _ERROR = object(), object()


def default_workers():
    """The number of cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class Dataset:
    """A re-iterable pipeline of elements; see the module docstring. Build one with `from_tensor_slices` or
    `from_generator` (or `tinycnn.data.image_dataset_from_directory`), then chain steps."""

    def __init__(self, make_iterator, length=None, fingerprint=None, parent=None, derive=None):
        self._make_iterator = make_iterator   # () -> an iterator over one epoch's elements
        self._length = length                 # int, math.inf (endless) or None (unknown)
        self._fingerprint = fingerprint       # () -> str describing the pipeline, or None where it can't
        self._parent = parent                 # the Dataset this step reads from (None for a source)
        self._derive = derive                 # (new parent, num_shards, index) -> this step on new parent
        self._rows = None                     # RowAccess where elements can be gathered by index (see below)

    # ------------------------------------------------------------------ sources
    @staticmethod
    def from_tensor_slices(tensors):
        """The elements of an array, or of a tuple of arrays of the same length (then each element is a tuple)."""
        parts = tuple(tensors) if isinstance(tensors, tuple) else (tensors,)
        arrays = [_as_array(a) for a in parts]
        if any(a.ndim == 0 for a in arrays):
            raise ValueError("from_tensor_slices: every array needs a first axis to slice along")
        lengths = {len(a) for a in arrays}
        if len(lengths) > 1:
            raise ValueError(f"from_tensor_slices: the arrays have different lengths {[len(a) for a in arrays]}")
        count = lengths.pop()
        as_tuple = isinstance(tensors, tuple)

        def elements():
            for i in range(count):
                yield tuple(a[i] for a in arrays) if as_tuple else arrays[0][i]

        ds = Dataset(elements, count, _memo(lambda: "slices:" + _hash_arrays(arrays)))
        ds._rows = RowAccess(lambda: iter(range(count)),
                             lambda rows: tuple(a[rows] for a in arrays) if as_tuple else arrays[0][rows])
        return ds

    @staticmethod
    def from_generator(generator, length=None):
        """Elements from `generator()`, a function returning a fresh iterator (called once per epoch).
        `length`: the number of elements, if known (else len() is a TypeError)."""
        if not callable(generator):
            raise TypeError("from_generator needs a function that returns an iterator (e.g. a generator "
                            f"function), got {type(generator).__name__}; pass the function, not its result")
        return Dataset(lambda: iter(generator()), length, None)

    # ------------------------------------------------------------------ steps
    def _then(self, step, length, description, derive):
        """A Dataset whose epoch iterator is step(iterator of this one)."""
        return Dataset(lambda: step(iter(self)), length, _extend(self._fingerprint, description), self, derive)

    def map(self, fn, num_parallel_calls=AUTOTUNE):
        """fn on every element (a tuple's parts as arguments), in `num_parallel_calls` threads; order is kept."""
        workers = default_workers() if num_parallel_calls in (None, AUTOTUNE) else int(num_parallel_calls)
        if workers < 1:
            raise ValueError(f"map: num_parallel_calls must be >= 1 or AUTOTUNE, got {num_parallel_calls}")
        step = (lambda it: map(lambda e: _call(fn, e), it)) if workers == 1 else \
            (lambda it: _map_in_threads(it, fn, workers))
        return self._then(step, self._length, "map:" + _describe_function(fn),
                          lambda parent, n, i: parent.map(fn, num_parallel_calls))

    def shuffle(self, buffer_size, seed=None, reshuffle_each_iteration=True):
        """Elements in random order through a buffer of buffer_size; see the module docstring."""
        buffer_size = _positive_int(buffer_size, "shuffle: buffer_size")
        passes = [0]  # the number of the next pass (set_epoch sets it)

        def step(it):
            epoch = passes[0] if reshuffle_each_iteration else 0
            passes[0] += 1
            return _shuffled(it, buffer_size, _epoch_generator(seed, epoch))

        ds = self._then(step, self._length, f"shuffle:{buffer_size}:{seed}",
                        lambda parent, n, i: parent.shuffle(buffer_size, seed, reshuffle_each_iteration))
        ds._passes = passes
        if self._rows is not None:          # shuffle the row numbers, not the elements: no buffer of elements
            parent_rows = self._rows
            ds._rows = RowAccess(lambda: step(parent_rows.order()), parent_rows.gather, parent_rows.available)
        return ds

    def set_epoch(self, epoch):
        """Make the next pass through this pipeline pass number `epoch` (from 0) for every shuffle in it, so that
        a fit resumed at that epoch shuffles as the uninterrupted run did (fit calls it). Returns self."""
        ds = self
        while ds is not None:
            if getattr(ds, "_passes", None) is not None:
                ds._passes[0] = int(epoch)
            ds = ds._parent
        return self

    def batch(self, batch_size, drop_remainder=False):
        """Consecutive elements stacked into batches of batch_size (the last one smaller unless dropped)."""
        batch_size = _positive_int(batch_size, "batch: batch_size")
        length = self._length
        if length is not None and length != math.inf:
            length = length // batch_size if drop_remainder else -(-length // batch_size)

        def derive(parent, num_shards, index):  # the global batch split between the ranks
            share = batch_size // num_shards + (1 if index < batch_size % num_shards else 0)
            return parent.batch(max(share, 1), drop_remainder)

        rows = self._rows

        def epoch():
            if rows is not None and rows.available():   # gather each batch's rows at once
                return _gathered(rows, batch_size, drop_remainder)
            return _batched(iter(self), batch_size, drop_remainder)

        return Dataset(epoch, length, _extend(self._fingerprint, f"batch:{batch_size}:{drop_remainder}"), self,
                       derive)

    def prefetch(self, buffer_size=2):
        """Run the pipeline in a background thread, up to buffer_size elements ahead (AUTOTUNE: 2)."""
        buffer_size = 2 if buffer_size in (None, AUTOTUNE) else _positive_int(buffer_size, "prefetch: buffer_size")
        return Dataset(lambda: _prefetched(self, buffer_size), self._length, self._fingerprint, self,
                       lambda parent, n, i: parent.prefetch(buffer_size))

    def cache(self, path=None):
        """Keep the first complete pass in memory (path None) or in the file `path`; see the module docstring."""
        if path is None:
            return self._then(_MemoryCache().replay, self._length, "", lambda parent, n, i: parent.cache())
        from .disk_cache import DiskCache
        path = os.fspath(path)
        disk = DiskCache(path, self)
        ds = Dataset(disk.elements, self._length, self._fingerprint, self,
                     lambda parent, n, i: parent.cache(f"{path}.shard-{i}-of-{n}"))
        ds._rows = RowAccess(disk.order, disk.gather, disk.has_rows)
        return ds

    def take(self, count):
        """The first `count` elements (all of them if count is -1)."""
        count = int(count)
        length = self._length if count < 0 else (count if self._length is None else min(count, self._length))
        return self._then(lambda it: it if count < 0 else itertools.islice(it, count), length, f"take:{count}",
                          lambda parent, n, i: parent.take(count))

    def skip(self, count):
        """All but the first `count` elements."""
        count = max(0, int(count))
        length = None if self._length is None else max(0, self._length - count)
        return self._then(lambda it: itertools.islice(it, count, None), length, f"skip:{count}",
                          lambda parent, n, i: parent.skip(count))

    def repeat(self, count=None):
        """The elements `count` times (None or -1: forever), each pass a new epoch of the pipeline above."""
        endless = count is None or count < 0
        if endless:
            length = math.inf if self._length != 0 else 0
        else:
            length = None if self._length is None else self._length * int(count)

        def passes():
            for _ in (itertools.count() if endless else range(int(count))):
                yield from self

        return Dataset(passes, length, _extend(self._fingerprint, f"repeat:{count}"), self,
                       lambda parent, n, i: parent.repeat(count))

    def shard(self, num_shards, index):
        """Every num_shards-th element, starting at `index` (tf.data's shard)."""
        num_shards = _positive_int(num_shards, "shard: num_shards")
        if not 0 <= index < num_shards:
            raise ValueError(f"shard: index must be in [0, {num_shards}), got {index}")
        length = self._length
        if length is not None and length != math.inf:
            length = len(range(index, length, num_shards))
        return self._then(lambda it: itertools.islice(it, index, None, num_shards), length,
                          f"shard:{num_shards}:{index}", lambda parent, n, i: parent.shard(num_shards, index))

    def distribute(self, num_shards, index):
        """This pipeline for rank `index` of `num_shards`: sharded at the source, batch sizes divided."""
        if num_shards == 1:
            return self
        if self._parent is None:
            return self.shard(num_shards, index)
        return self._derive(self._parent.distribute(num_shards, index), num_shards, index)

    # ------------------------------------------------------------------ iteration
    def __iter__(self):
        return iter(self._make_iterator())

    def __len__(self):
        if self._length is None:
            raise TypeError("the length of this Dataset is unknown (it reads from a generator, or a step such as "
                            "an unsized source hides it); pass from_generator(..., length=n) or give fit "
                            "steps_per_epoch")
        if self._length == math.inf:
            raise TypeError("this Dataset repeats forever: it has no length; give fit steps_per_epoch")
        return int(self._length)

    def cardinality(self):
        """The number of elements: an int, math.inf (repeats forever) or None (unknown)."""
        return self._length

    def fingerprint(self):
        """A string that changes when the data or the steps do (None where it cannot be known)."""
        return None if self._fingerprint is None else self._fingerprint()

    def __repr__(self):
        length = {None: "unknown", math.inf: "infinite"}.get(self._length, self._length)
        return f"<Dataset length={length}>"


class RowAccess:
    """Elements that can be fetched by row number (arrays, a cache file of equally shaped elements): shuffle
    then permutes row numbers instead of holding elements in a buffer, and batch gathers a batch's rows in
    one indexing operation, as fit does with arrays. order() -> the epoch's row numbers; gather(rows) -> the
    batch of those rows; available() -> whether it can be used now."""

    def __init__(self, order, gather, available=lambda: True):
        self.order, self.gather, self.available = order, gather, available


def _gathered(rows, batch_size, drop_remainder):
    chunk = []
    for row in rows.order():
        chunk.append(row)
        if len(chunk) == batch_size:
            yield rows.gather(np.asarray(chunk, np.int64))
            chunk = []
    if chunk and not drop_remainder:
        yield rows.gather(np.asarray(chunk, np.int64))


# ---------------------------------------------------------------------------------------------- steps

def _call(fn, element):
    return fn(*element) if isinstance(element, tuple) else fn(element)


def _map_in_threads(elements, fn, workers):
    """fn on each element in a pool of `workers` threads, up to 2 x workers in flight, yielded in order."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tinycnn-map")
    pending = deque()
    try:
        for element in elements:
            pending.append(pool.submit(_call, fn, element))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _epoch_generator(seed, epoch):
    if seed is None:
        from ..random import next_seed
        return np.random.default_rng(next_seed())
    return np.random.default_rng([int(seed), epoch])


def _shuffled(elements, buffer_size, rng):
    """tf.data's shuffle: fill a buffer, then yield a random slot and refill it with the next element."""
    buffer = []
    for element in elements:
        if len(buffer) < buffer_size:
            buffer.append(element)
            continue
        slot = int(rng.integers(buffer_size))
        yield buffer[slot]
        buffer[slot] = element
    for slot in rng.permutation(len(buffer)):
        yield buffer[slot]


def _batched(elements, batch_size, drop_remainder):
    batch = []
    for element in elements:
        batch.append(element)
        if len(batch) == batch_size:
            yield collate(batch)
            batch = []
    if batch and not drop_remainder:
        yield collate(batch)


def collate(elements):
    """A list of elements -> one batch: arrays stacked along a new first axis, part by part for tuples."""
    first = elements[0]
    if isinstance(first, tuple):
        return tuple(_stack([e[i] for e in elements]) for i in range(len(first)))
    return _stack(elements)


def _stack(items):
    try:
        return np.stack(items)
    except ValueError:
        shapes = sorted({np.shape(item) for item in items})
        raise ValueError(f"batch: elements of different shapes {shapes[:3]} cannot be stacked into a batch; "
                         "resize them to one size first (e.g. image_size=, or a map)") from None


def _prefetched(dataset, buffer_size):
    """Iterate `dataset` in a daemon thread that keeps up to buffer_size elements in a bounded queue."""
    ready, stop = queue.Queue(maxsize=buffer_size), threading.Event()

    def offer(item):  # put, unless the consumer has gone away
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        elements = iter(dataset)
        try:
            for element in elements:
                if not offer(element):
                    return
            offer(_END)
        except BaseException as error:  # handed to the consumer, raised there
            offer((_ERROR, error))
        finally:
            close = getattr(elements, "close", None)
            if close is not None:
                close()

    threading.Thread(target=produce, name="tinycnn-prefetch", daemon=True).start()
    try:
        while True:
            item = ready.get()
            if item is _END:
                return
            if isinstance(item, tuple) and len(item) == 2 and item[0] is _ERROR:
                raise item[1]
            yield item
    finally:
        stop.set()


class _MemoryCache:
    """The first complete pass, kept; later passes replay it."""

    def __init__(self):
        self.elements = None

    def replay(self, upstream):
        if self.elements is not None:
            yield from self.elements
            return
        seen = []
        for element in upstream:
            seen.append(element)
            yield element
        self.elements = seen


# ---------------------------------------------------------------------------------------------- helpers

def _as_array(value):
    from ..tensor import Tensor
    return value.numpy() if isinstance(value, Tensor) else np.asarray(value)


def _positive_int(value, what):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _memo(compute):
    """compute(), worked out once, on first use."""
    result = []

    def once():
        if not result:
            result.append(compute())
        return result[0]
    return once


def _extend(fingerprint, description):
    if fingerprint is None:
        return None
    return _memo(lambda: hashlib.sha256(f"{fingerprint()}|{description}".encode()).hexdigest())


def _hash_arrays(arrays):
    digest = hashlib.sha256()
    for a in arrays:
        digest.update(f"{a.dtype.str}{a.shape}".encode())
        digest.update(np.ascontiguousarray(a).tobytes() if a.dtype.kind != "O" else repr(a.tolist()).encode())
    return digest.hexdigest()


def _describe_function(fn):
    """The function's name and a hash of its code and constants (a changed function gets a new cache)."""
    code = getattr(fn, "__code__", None)
    name = getattr(fn, "__qualname__", type(fn).__qualname__)
    if code is None:
        return name
    return name + ":" + hashlib.sha256(code.co_code + repr(code.co_consts).encode()).hexdigest()[:16]

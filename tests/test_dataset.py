"""tinycnn.data.Dataset: sources, map in threads, shuffle per epoch, batch, prefetch, cache, take/skip/repeat,
shard and distribute."""
import threading
import time

import numpy as np
import pytest

import tinycnn
from tinycnn.data import Dataset


def numbers(n=10):
    return Dataset.from_tensor_slices((np.arange(n), np.arange(n) * 10))


def firsts(ds):
    return [int(e[0]) for e in ds]


def test_from_tensor_slices_gives_elements_and_length():
    ds = numbers(4)
    assert len(ds) == 4
    assert [(int(a), int(b)) for a, b in ds] == [(0, 0), (1, 10), (2, 20), (3, 30)]
    single = Dataset.from_tensor_slices(np.ones((3, 2, 2)))
    assert [e.shape for e in single] == [(2, 2)] * 3
    with pytest.raises(ValueError, match="different lengths"):
        Dataset.from_tensor_slices((np.arange(3), np.arange(4)))


@pytest.mark.parametrize("workers", [1, 3])
def test_map_passes_the_parts_and_keeps_the_order(workers):
    def slow(a, b):
        time.sleep(0.001 * ((7 * int(a)) % 5))   # out-of-order finishing in the thread pool
        return a + b, a
    out = list(numbers(20).map(slow, num_parallel_calls=workers))
    assert [int(s) for s, _ in out] == [11 * i for i in range(20)]


def test_map_runs_in_several_threads_and_raises_the_functions_error():
    seen = set()

    def record(a, b):
        seen.add(threading.get_ident())
        time.sleep(0.002)
        return a
    list(numbers(16).map(record, num_parallel_calls=4))
    assert len(seen) > 1

    def fail(a, b):
        if a == 5:
            raise RuntimeError("element five")
        return a
    with pytest.raises(RuntimeError, match="element five"):
        list(numbers().map(fail, num_parallel_calls=2))


def test_shuffle_is_deterministic_for_a_seed_and_new_each_epoch():
    a, b = numbers(30).shuffle(30, seed=3), numbers(30).shuffle(30, seed=3)
    epochs_a = [firsts(a) for _ in range(3)]
    epochs_b = [firsts(b) for _ in range(3)]
    assert epochs_a == epochs_b                                   # same seed, same orders
    assert all(sorted(order) == list(range(30)) for order in epochs_a)
    assert len({tuple(order) for order in epochs_a}) == 3           # a new order every epoch
    assert firsts(numbers(30).shuffle(30, seed=4)) != epochs_a[0]
    fixed = numbers(30).shuffle(30, seed=3, reshuffle_each_iteration=False)
    assert firsts(fixed) == firsts(fixed)


def test_shuffle_without_seed_follows_manual_seed():
    tinycnn.manual_seed(7)
    first = firsts(numbers(20).shuffle(5))
    tinycnn.manual_seed(7)
    assert firsts(numbers(20).shuffle(5)) == first
    assert sorted(first) == list(range(20))


def test_batch_keeps_the_last_partial_batch_or_drops_it():
    kept = list(numbers(10).batch(4))
    assert [len(xb) for xb, _ in kept] == [4, 4, 2] and len(numbers(10).batch(4)) == 3
    assert kept[2][0].tolist() == [8, 9] and kept[2][1].tolist() == [80, 90]
    dropped = numbers(10).batch(4, drop_remainder=True)
    assert [len(xb) for xb, _ in dropped] == [4, 4] and len(dropped) == 2
    with pytest.raises(ValueError, match="different shapes"):
        list(Dataset.from_generator(lambda: iter([np.zeros(2), np.zeros(3)])).batch(2))


def test_take_skip_repeat_and_their_lengths():
    assert firsts(numbers().take(3)) == [0, 1, 2] and len(numbers().take(3)) == 3
    assert firsts(numbers().skip(8)) == [8, 9] and len(numbers().skip(8)) == 2
    assert firsts(numbers(3).repeat(2)) == [0, 1, 2, 0, 1, 2] and len(numbers(3).repeat(2)) == 6
    assert firsts(numbers(3).repeat().take(7)) == [0, 1, 2, 0, 1, 2, 0]
    with pytest.raises(TypeError, match="repeats forever"):
        len(numbers(3).repeat())


def test_a_generator_has_no_length_and_runs_again_every_epoch():
    ds = Dataset.from_generator(lambda: ((np.float32(i), i) for i in range(5))).batch(2)
    with pytest.raises(TypeError, match="unknown"):
        len(ds)
    assert [len(xb) for xb, _ in ds] == [2, 2, 1]
    assert [len(xb) for xb, _ in ds] == [2, 2, 1]
    assert len(Dataset.from_generator(lambda: iter(range(5)), length=5)) == 5
    with pytest.raises(TypeError, match="function"):
        Dataset.from_generator(iter(range(3)))


def test_prefetch_gives_the_same_elements_passes_errors_and_stops_its_thread():
    ds = numbers(50).map(lambda a, b: (a, b)).batch(8).prefetch(2)
    assert [xb.tolist() for xb, _ in ds] == [xb.tolist() for xb, _ in numbers(50).batch(8)]
    before = threading.active_count()
    for i, _ in enumerate(numbers(1000).prefetch(2)):
        if i == 3:
            break
    deadline = time.time() + 2
    while threading.active_count() > before and time.time() < deadline:
        time.sleep(0.02)
    assert threading.active_count() <= before

    def fail(a, b):
        raise KeyError("bad element")
    with pytest.raises(KeyError, match="bad element"):
        list(numbers().map(fail, 1).prefetch(2))


def test_cache_in_memory_runs_the_pipeline_once():
    calls = []
    ds = numbers(6).map(lambda a, b: calls.append(int(a)) or (a, b), num_parallel_calls=1).cache()
    assert firsts(ds) == firsts(ds) == list(range(6))
    assert sorted(calls) == list(range(6))


def test_cache_file_is_written_once_reused_by_a_second_run_and_rebuilt_when_the_source_changes(tmp_path):
    path = tmp_path / "cache" / "numbers"
    images = np.arange(24, dtype=np.float32).reshape(6, 2, 2) * 10      # whole numbers 0..230: kept as uint8
    calls = []

    def pipeline(data):
        return Dataset.from_tensor_slices((data, np.arange(6))).map(
            lambda x, y: calls.append(1) or (x, y), num_parallel_calls=1).cache(path)

    first = [(x.copy(), int(y)) for x, y in pipeline(images)]
    assert len(calls) == 6 and path.exists()
    assert path.stat().st_size == 6 * 4 + 6 * 8      # images as uint8, labels as int64
    again = [(x, int(y)) for x, y in pipeline(images)]          # a second "run": a new Dataset, same source
    assert len(calls) == 6
    assert all(np.array_equal(a, b) and a.dtype == b.dtype == np.float32 and ya == yb
               for (a, ya), (b, yb) in zip(first, again))
    changed = images.copy()
    changed[0, 0, 0] = 1.5                                            # not a whole number: stored as float32
    rebuilt = [x for x, _ in pipeline(changed)]
    assert len(calls) == 12 and rebuilt[0][0, 0] == 1.5


def test_shard_and_distribute_split_the_elements_between_ranks():
    shards = [firsts(numbers(10).shard(3, i)) for i in range(3)]
    assert sorted(sum(shards, [])) == list(range(10)) and len(numbers(10).shard(3, 0)) == 4
    pipeline = numbers(12).map(lambda a, b: (a, b)).batch(4)
    ranks = [pipeline.distribute(2, r) for r in range(2)]
    batches = [[xb.tolist() for xb, _ in ds] for ds in ranks]
    assert [len(b) for b in batches[0]] == [2, 2, 2]                 # the global batch 4 split into 2 + 2
    assert sorted(sum(sum(batches, []), [])) == list(range(12))
    assert len(ranks[0]) == 3


def test_shuffle_and_batch_over_row_access_match_the_element_path(tmp_path):
    by_rows = numbers(30).shuffle(30, seed=3).batch(4)                   # row numbers shuffled, rows gathered
    by_elements = numbers(30).map(lambda a, b: (a, b), 1).shuffle(30, seed=3).batch(4)
    for _ in range(2):
        assert [xb.tolist() for xb, _ in by_rows] == [xb.tolist() for xb, _ in by_elements]
    images = np.arange(60, dtype=np.float32).reshape(15, 2, 2)
    cached = Dataset.from_tensor_slices((images, np.arange(15))).map(lambda x, y: (x, y), 1).cache(tmp_path / "c")
    batches = list(cached.shuffle(15, seed=1).batch(4, drop_remainder=True))
    assert [len(xb) for xb, _ in batches] == [4, 4, 4]
    for xb, yb in batches:
        assert xb.dtype == np.float32 and np.array_equal(xb, images[yb])

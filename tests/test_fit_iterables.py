"""fit / evaluate / predict on anything iterable: a Dataset, a list of batches, a generator with
steps_per_epoch; validation_data and class_weight with all of them; inputs as Keras takes them (uint8, lists);
a Dataset under MPI, each rank reading only its shard."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tinycnn
from tinycnn import layers
from tinycnn.data import Dataset
from tinycnn.data.adapter import RanOutOfData

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def data(n=21):
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (n, 8, 8, 1)).astype(np.float32)
    y = (x[:, :, :4].mean((1, 2, 3)) > x[:, :, 4:].mean((1, 2, 3))).astype(np.int64)
    return x, y


def net(seed=0, dropout=0.2):
    tinycnn.manual_seed(seed)
    model = tinycnn.Sequential([layers.Conv2D(4, 3, activation="relu", input_shape=(8, 8, 1)), layers.Flatten(),
                                layers.Dropout(dropout), layers.Dense(1, activation="sigmoid")])
    return model.compile(loss="binary_crossentropy", metrics=["accuracy"])


def weights(model):
    return [p.numpy().copy() for p in model.parameters()]


def same_weights(a, b):
    return all(np.array_equal(p, q) for p, q in zip(weights(a), weights(b)))


def test_fit_on_a_dataset_equals_fit_on_the_same_arrays():
    x, y = data()
    on_arrays = net()
    on_arrays.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    on_dataset = net()
    on_dataset.fit(Dataset.from_tensor_slices((x, y)).map(lambda a, b: (a, b)).batch(8).prefetch(2), epochs=2,
                   verbose=0)
    assert same_weights(on_arrays, on_dataset)
    on_list = net()
    on_list.fit([(x[i:i + 8], y[i:i + 8]) for i in range(0, 21, 8)], epochs=2, verbose=0)
    assert same_weights(on_arrays, on_list)


def test_fit_on_a_shuffled_dataset_repeats_for_a_seed():
    x, y = data()
    runs = []
    for _ in range(2):
        model = net()
        model.fit(Dataset.from_tensor_slices((x, y)).shuffle(21, seed=4).batch(8), epochs=3, verbose=0)
        runs.append(model)
    assert same_weights(*runs)


def test_class_weight_and_sample_weights_work_on_every_kind_of_input():
    x, y = data()
    class_weight = {0: 1.0, 1: 3.0}
    on_arrays = net()
    on_arrays.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, class_weight=class_weight)
    on_dataset = net()
    on_dataset.fit(Dataset.from_tensor_slices((x, y)).batch(8), epochs=1, verbose=0, class_weight=class_weight)
    assert same_weights(on_arrays, on_dataset)
    sample_weight = np.where(y == 1, 3.0, 1.0).astype(np.float32)
    on_weights = net()
    on_weights.fit(Dataset.from_tensor_slices((x, y, sample_weight)).batch(8), epochs=1, verbose=0)
    assert same_weights(on_arrays, on_weights)
    assert not same_weights(on_arrays, net())


def test_a_generator_with_steps_per_epoch_and_one_without():
    x, y = data()

    def batches():
        while True:
            for i in range(0, 16, 8):
                yield x[i:i + 8], y[i:i + 8]
    history = net().fit(batches(), steps_per_epoch=3, epochs=2, verbose=0)
    assert history.epoch == [0, 1] and np.isfinite(history.history["loss"]).all()
    once = (b for b in [(x[:8], y[:8]), (x[8:16], y[8:16])])
    with pytest.warns(RanOutOfData, match="ran out of data"):
        history = net().fit(once, epochs=3, verbose=0)
    assert history.epoch == [0]            # one pass, then nothing left (as Keras)


def test_validation_data_may_be_any_input():
    x, y = data()
    ds = Dataset.from_tensor_slices((x, y)).batch(8)
    model = net()
    history = model.fit(ds, epochs=2, verbose=0, validation_data=ds)
    reference = model.evaluate(x, y, return_dict=True)
    assert history.history["val_loss"][-1] == pytest.approx(reference["loss"], rel=1e-5)

    def endless():
        while True:
            yield x[:8], y[:8]
    history = net().fit(x, y, epochs=2, verbose=0, validation_data=endless(), validation_steps=2)
    assert len(history.history["val_accuracy"]) == 2


def test_evaluate_and_predict_take_datasets_and_lists():
    x, y = data()
    model = net()
    ds = Dataset.from_tensor_slices((x, y)).batch(5)
    assert model.evaluate(ds) == pytest.approx(model.evaluate(x, y), rel=1e-5)
    assert np.allclose(model.predict(ds), model.predict(x), atol=1e-6)
    assert np.allclose(model.predict(Dataset.from_tensor_slices(x).batch(4)), model.predict(x), atol=1e-6)
    assert np.allclose(model.predict([x[:1]]), model.predict(x[:1]))            # a list holding one batch
    assert np.allclose(model.predict(list(x[:3])), model.predict(x[:3]))        # a list of images


def test_integer_inputs_are_cast_not_rescaled_as_keras_does():
    x, y = data()
    pixels = (x * 255).astype(np.uint8)
    a = net()
    a.fit(pixels, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    b = net()
    b.fit(pixels.astype(np.float32), y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert same_weights(a, b)
    assert np.allclose(a.predict(pixels), a.predict(pixels.astype(np.float32)))
    with pytest.raises(TypeError, match="numbers"):
        a.predict(np.full((2, 8, 8, 1), "a"))


def test_misuse_gets_one_line_errors():
    x, y = data()
    ds = Dataset.from_tensor_slices((x, y)).batch(8)
    with pytest.raises(ValueError, match="y must be None"):
        net().fit(ds, y, verbose=0)
    with pytest.raises(ValueError, match="validation_split works on arrays only"):
        net().fit(ds, validation_split=0.2, verbose=0)
    with pytest.raises(ValueError, match="carry no targets"):
        net().fit(Dataset.from_tensor_slices(x).batch(8), verbose=0)
    with pytest.raises(TypeError, match="pass the generator it returns"):
        net().fit(lambda: iter([]), verbose=0)
    with pytest.raises(ValueError, match="holds no batch"):
        net().fit([], verbose=0)


WORKER = textwrap.dedent("""
    import sys
    import numpy as np
    sys.path.insert(0, {repo!r})
    import tinycnn, tinycnn.distributed
    from tinycnn.data import Dataset
    sys.path.insert(0, {tests!r})
    from test_fit_iterables import data, net, weights
    dist = tinycnn.distributed.auto()
    x, y = data()
    read = []
    ds = Dataset.from_tensor_slices((x, y, np.arange(len(x)))).map(
        lambda a, b, i: read.append(int(i)) or (a, b), num_parallel_calls=1).batch(8)
    model = net(dropout=0.0)       # the ranks' dropout masks differ from one process's
    model.fit(ds, epochs=2, verbose=0, distributed=dist)
    read = dist.comm.gather(sorted(set(read)), root=0)
    if dist.is_root:
        np.savez({out!r}, read0=read[0], read1=read[1], *weights(model))
""")


def test_under_mpi_each_rank_reads_its_shard_and_the_ranks_train_as_one_process(tmp_path):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from test_distributed import _mpiexec, _require_mpi
    _require_mpi()
    script, out = tmp_path / "worker.py", tmp_path / "result.npz"
    script.write_text(WORKER.format(repo=REPO, tests=os.path.dirname(os.path.abspath(__file__)), out=str(out)))
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",  # CI runs as root
               NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    job = subprocess.run([_mpiexec(), "--oversubscribe", "-n", "2", sys.executable, str(script)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert job.returncode == 0, job.stderr[-2000:]
    result = np.load(out)
    assert result["read0"].tolist() == list(range(0, 21, 2)) and result["read1"].tolist() == list(range(1, 21, 2))
    x, y = data()
    single = net(dropout=0.0)
    single.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    # rank r reads samples r, r+2, ... in batches of 4: each global batch holds the same samples as one process's
    for i, w in enumerate(weights(single)):
        assert np.allclose(result[f"arr_{i}"], w, atol=1e-5)

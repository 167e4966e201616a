"""Hostile and damaged model files: each refused with a ModelFileError naming the field, quickly, and without
the memory the file declares (measured in a fresh process: the growth of its peak resident memory)."""
import json
import os
import stat
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

import tinycnn
from tinycnn.saving import ModelFileError, NonFiniteWeightsWarning, load_model, read_metadata

from bad_input_helpers import REPO, header_array, npy_bytes, read_model_file, write_model_file

MEMORY_LIMIT_MB = 32    # what loading any of the attack files below may add to the process's peak memory
TIME_LIMIT_S = 2.0


def _edited(small_model_file, tmp_path, name, edit_header=None, edit_arrays=None, **write):
    header, arrays = read_model_file(small_model_file)
    if edit_header:
        edit_header(header)
    if edit_arrays:
        edit_arrays(arrays)
    return write_model_file(tmp_path / name, header, arrays, **write)


def _zip_bomb(path, header, megabytes):
    """A model file whose one array inflates from a few KB to `megabytes` MB of zeros."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("__tinycnn__.npy", npy_bytes(header_array(header)))
        count = megabytes << 18  # float32 values
        with archive.open("param/layers.0.kernel.npy", "w", force_zip64=True) as member:
            member.write(_npy_header((count,), "<f4"))
            zeros = bytes(1 << 20)
            for _ in range(megabytes):
                member.write(zeros)
    return path


def _npy_header(shape, descr):
    """The header bytes of a .npy file (version 1.0) declaring `shape` of `descr`, without any data."""
    import io
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def _attack_files(small_model_file, tmp_path):
    """{name: path} of every attack file, each of which load_model must refuse."""
    header, arrays = read_model_file(small_model_file)
    files = {}
    files["zip bomb"] = _zip_bomb(tmp_path / "bomb.tcnn", header, megabytes=96)
    files["huge declared shape"] = write_model_file(tmp_path / "shape.tcnn", header, dict(
        arrays, **{"param/layers.0.kernel": _npy_header((100_000, 100_000), "<f4") + bytes(64)}))

    def dense_10000(header):
        header["input_shape"] = [10000]
        header["config"]["layers"] = [{"class": "Dense", "config": {"name": "big", "units": 10000}}]
        header.pop("optimizer_state", None)
    files["Dense(10000, 10000) in a 1 KB file"] = write_model_file(
        tmp_path / "dense.tcnn", _then(header, dense_10000),
        {"param/layers.0.kernel": np.zeros((2, 3), np.float32), "param/layers.0.bias": np.zeros(2, np.float32)})
    files["functional Dense(10000, 10000)"] = write_model_file(tmp_path / "functional.tcnn", {
        "format": "tinycnn-model", "version": 1, "class": "Model", "module": "tinycnn.functional_model",
        "input_shape": [10000], "config": {
            "name": "m", "layers": [{"class": "InputLayer", "config": {"name": "in", "shape": [10000]}},
                                    {"class": "Dense", "config": {"name": "big", "units": 10000}}],
            "nodes": [{"layer": "in", "inputs": None}, {"layer": "big", "inputs": [0, 0]}],
            "inputs": [[0, 0]], "outputs": [[1, 0]], "inputs_as_list": False, "outputs_as_list": False}},
        {"param/big.kernel": np.zeros((2, 3), np.float32), "param/big.bias": np.zeros(2, np.float32)})
    files["huge input shape"] = write_model_file(
        tmp_path / "input.tcnn", _then(header, lambda h: h.update(input_shape=[3, 100_000, 100_000])), arrays)
    return files


def _then(header, edit):
    header = json.loads(json.dumps(header))
    edit(header)
    return header


def test_attack_files_are_refused_quickly_and_within_the_memory_limit(small_model_file, tmp_path):
    files = _attack_files(small_model_file, tmp_path)
    script = f"""
import json, resource, sys, time
import tinycnn
from tinycnn.saving import ModelFileError
report = {{}}
for name, path in json.loads(sys.argv[1]).items():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    try:
        tinycnn.load_model(path)
        outcome = "loaded"
    except ModelFileError as error:
        outcome = "ModelFileError: " + str(error)
    except BaseException as error:
        outcome = type(error).__name__ + ": " + str(error)
    report[name] = dict(outcome=outcome, seconds=time.perf_counter() - start,
                        grew_mb=(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
print(json.dumps(report))
"""
    done = subprocess.run([sys.executable, "-c", script, json.dumps({k: str(v) for k, v in files.items()})],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for name, seen in report.items():
        assert seen["outcome"].startswith("ModelFileError"), (name, seen)
        assert seen["seconds"] < TIME_LIMIT_S, (name, seen)
        assert seen["grew_mb"] < MEMORY_LIMIT_MB, (name, seen)
    assert "zip bomb" in report["zip bomb"]["outcome"]
    assert "(100000, 100000)" in report["huge declared shape"]["outcome"]
    assert "layer 'big' (Dense)" in report["Dense(10000, 10000) in a 1 KB file"]["outcome"]
    assert "layer 'big' (Dense)" in report["functional Dense(10000, 10000)"]["outcome"]
    assert "input_shape" in report["huge input shape"]["outcome"]


def test_a_huge_shape_anywhere_in_the_config_is_refused(small_model_file, tmp_path):
    def huge_input(header):
        header["config"]["layers"][0]["config"]["input_shape"] = [100_000, 100_000, 3]
    with pytest.raises(ModelFileError, match=r"config\.layers\.0\.config\.input_shape"):
        load_model(_edited(small_model_file, tmp_path, "huge.tcnn", edit_header=huge_input))


def test_a_file_that_is_not_a_zip_is_a_clear_error(tmp_path):
    for content in (b"\x89PNG\r\n\x1a\n" + bytes(100), b"", np.zeros(3).tobytes()):
        path = tmp_path / "not-a-model.tcnn"
        path.write_bytes(content)
        with pytest.raises(ModelFileError, match="not a zip") as error:
            load_model(path)
        assert "allow_pickle" not in str(error.value)


def test_a_plain_npy_file_is_not_taken_for_a_model(tmp_path):
    path = tmp_path / "weights.npy"
    np.save(path, np.zeros(4, np.float32))
    with pytest.raises(ModelFileError, match="not a zip"):
        load_model(path)


@pytest.mark.parametrize("dtype, value", [("int8", 1), ("bool", True), ("U3", "abc"), ("datetime64[s]", 0),
                                          ("complex64", 1j), ("uint8", 7)])
def test_weights_that_are_not_floating_point_are_refused(small_model_file, tmp_path, dtype, value):
    def cast(arrays):
        kernel = arrays["param/layers.0.kernel"]
        arrays["param/layers.0.kernel"] = np.full(kernel.shape, value, dtype=dtype)
    path = _edited(small_model_file, tmp_path, "typed.tcnn", edit_arrays=cast)
    with pytest.raises(ModelFileError, match=r"param/layers\.0\.kernel has dtype .*floating point"):
        load_model(path)


def test_a_pickled_array_is_refused_without_unpickling(small_model_file, tmp_path):
    header, arrays = read_model_file(small_model_file)
    arrays["param/layers.0.kernel"] = npy_bytes(np.array([{"a": 1}], dtype=object))
    path = write_model_file(tmp_path / "pickled.tcnn", header, arrays)
    with pytest.raises(ModelFileError, match="layers.0.kernel"):
        load_model(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_are_refused_unless_allowed(small_model_file, tmp_path, bad):
    def spoil(arrays):
        arrays["param/layers.2.bias"] = arrays["param/layers.2.bias"].copy()
        arrays["param/layers.2.bias"][1] = bad
    path = _edited(small_model_file, tmp_path, "nan.tcnn", edit_arrays=spoil)
    with pytest.raises(ModelFileError, match=r"param/layers\.2\.bias holds 1 NaN or inf"):
        load_model(path)
    with pytest.warns(NonFiniteWeightsWarning):
        model = load_model(path, allow_nonfinite=True)
    assert not np.isfinite(model.layers[2].bias.numpy()).all()


@pytest.mark.parametrize("field, value, named", [
    ("version", "1", "version"), ("version", 99, "version"), ("class", None, "class"), ("class", 3, "class"),
    ("config", "layers", "config"), ("input_shape", [0, 4, 4], "input_shape"), ("input_shape", [1.5], "input_shape"),
    ("input_shape", "6x6", "input_shape"), ("metadata", [1, 2], "metadata"), ("metrics", [{"x": 1}], "metrics"),
    ("optimizer_state", {"m": {"__array__": "optim/none"}}, "optimizer_state"), ("loss", 7, "loss"),
    ("loss", "no-such-loss", "loss"), ("optimizer", {"type": "Nope"}, "optimizer"),
])
def test_every_malformed_header_field_is_a_model_file_error_naming_it(small_model_file, tmp_path, field, value, named):
    path = _edited(small_model_file, tmp_path, "field.tcnn", edit_header=lambda h: h.update({field: value}))
    with pytest.raises(ModelFileError, match=named):
        load_model(path)


def test_a_config_that_does_not_build_names_the_config(small_model_file, tmp_path):
    def bad_layer(header):
        header["config"]["layers"][0]["config"]["filters"] = "many"
    with pytest.raises(ModelFileError, match="config"):
        load_model(_edited(small_model_file, tmp_path, "cfg.tcnn", edit_header=bad_layer))
    def unknown_layer(header):
        header["config"]["layers"][0]["class"] = "os.system"
    with pytest.raises(ModelFileError, match="config"):
        load_model(_edited(small_model_file, tmp_path, "cfg2.tcnn", edit_header=unknown_layer))


def test_damaged_headers_and_truncated_files(small_model_file, tmp_path):
    header, arrays = read_model_file(small_model_file)
    for raw in (b"{not json", b"[1, 2]", b"\xff\xfe"):
        path = write_model_file(tmp_path / "damaged.tcnn", raw, arrays)
        with pytest.raises(ModelFileError, match="header"):
            load_model(path)
        with pytest.raises(ModelFileError, match="header"):
            read_metadata(path)
    data = small_model_file.read_bytes()
    for cut in (len(data) // 3, len(data) - 30):
        path = tmp_path / "cut.tcnn"
        path.write_bytes(data[:cut])
        with pytest.raises(ModelFileError):
            load_model(path)


def test_weights_of_the_wrong_shape_name_the_layer(small_model_file, tmp_path):
    def widen(header):
        header["config"]["layers"][2]["config"]["units"] = 3
    with pytest.raises(ModelFileError, match=r"layer '.*' \(Dense\) makes its weight 'kernel' of shape \(3, 32\)"):
        load_model(_edited(small_model_file, tmp_path, "wide.tcnn", edit_header=widen))


def test_a_missing_model_file_and_a_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model file"):
        load_model(tmp_path / "nothing.tcnn")
    with pytest.raises(IsADirectoryError, match="is a folder"):
        load_model(tmp_path)


def test_loading_draws_no_random_numbers_and_gives_back_the_saved_model(small_model_file):
    tinycnn.manual_seed(5)
    expected = tinycnn.random.generator().uniform(size=3)
    tinycnn.manual_seed(5)
    model = load_model(small_model_file)
    assert np.array_equal(tinycnn.random.generator().uniform(size=3), expected)
    header, arrays = read_model_file(small_model_file)
    for name, value in model.state_dict().items():
        assert np.array_equal(value, arrays["param/" + name]), name


def test_saves_follow_the_umask_and_clean_up_interrupted_saves(small_model_file, tmp_path):
    model = load_model(small_model_file)
    stale = tmp_path / ".tmp-999999999-abc.npz"      # a pid that cannot be running
    stale.write_bytes(bytes(1000))
    old = time.time() - 3600
    os.utime(stale, (old, old))
    legacy = tmp_path / ".tmp-k2j3h4.npz"            # written by an older tinycnn (no pid in the name)
    legacy.write_bytes(bytes(10))
    os.utime(legacy, (old, old))
    fresh = tmp_path / f".tmp-{os.getpid()}-live.npz"  # a save of this very process: left alone
    fresh.write_bytes(bytes(10))
    previous = os.umask(0o027)
    try:
        model.save(tmp_path / "m.tcnn")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(tmp_path / "m.tcnn").st_mode) == 0o640
    assert not stale.exists() and not legacy.exists() and fresh.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([fresh.name, "m.tcnn"])


def test_a_compressed_fortran_ordered_big_endian_file_still_loads(small_model_file, tmp_path):
    header, arrays = read_model_file(small_model_file)
    kernel = arrays["param/layers.2.kernel"]
    arrays["param/layers.2.kernel"] = np.asfortranarray(kernel).astype(">f4")
    path = write_model_file(tmp_path / "other-writer.tcnn", header, arrays, compression=zipfile.ZIP_DEFLATED)
    assert np.array_equal(load_model(path).layers[2].kernel.numpy(), kernel)

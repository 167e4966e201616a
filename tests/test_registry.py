"""The model registry keyed by module and class (tinycnn/registry.py): two classes with one name stay two, a
file finds its own, and files that name a class without a (known) module load by the bare name when only
one class has it, else fail naming every candidate."""
import json

import numpy as np
import pytest

import tinycnn
from tinycnn import layers
from tinycnn.registry import CLASSES, AmbiguousClassError, ClassRegistry
from tinycnn.saving import HEADER, ModelFileError


def _net_class(module, offset, name="Net"):
    """A one-layer Model called `name` whose class says it is defined in `module` (its output + offset)."""
    def __init__(self):
        tinycnn.Model.__init__(self)
        self.dense = layers.Dense(2)

    def forward(self, x):
        return self.dense(x) + offset

    return type(name, (tinycnn.Model,), {"__module__": module, "__init__": __init__, "forward": forward})


def _rewrite_header(path, **changes):
    """The model file at `path` with header fields changed (None removes one): what an older file stores."""
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    header = json.loads(arrays[HEADER].tobytes().decode())
    for key, value in changes.items():
        if value is None:
            header.pop(key, None)
        else:
            header[key] = value
    arrays[HEADER] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    np.savez(path, **arrays)


def _saved(model_class, path):
    model = model_class()
    model.predict(np.zeros((1, 3), np.float32))  # builds the weights
    model.save(path)
    return model


def test_two_classes_with_one_name_stay_two(tmp_path):
    first, second = _net_class("registry_first", 0.0), _net_class("registry_second", 100.0)
    assert CLASSES.lookup("Net", "registry_first") is first
    assert CLASSES.lookup("Net", "registry_second") is second
    _saved(first, tmp_path / "first.npz")
    _saved(second, tmp_path / "second.npz")
    assert type(tinycnn.load_model(tmp_path / "first.npz")) is first
    assert type(tinycnn.load_model(tmp_path / "second.npz")) is second


def test_a_bare_class_name_loads_when_unambiguous(tmp_path):
    only = _net_class("registry_only", 0.0, "OnlyNet")  # a name no other class has
    model = _saved(only, tmp_path / "old.npz")
    _rewrite_header(tmp_path / "old.npz", module=None)  # a file that names the class only
    loaded = tinycnn.load_model(tmp_path / "old.npz")
    assert type(loaded) is only
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    _rewrite_header(tmp_path / "old.npz", module="a_module_that_was_renamed")
    assert type(tinycnn.load_model(tmp_path / "old.npz")) is only


def test_an_ambiguous_bare_name_names_both_candidates(tmp_path):
    first, second = _net_class("registry_a", 0.0, "TwinNet"), _net_class("registry_b", 1.0, "TwinNet")
    _saved(first, tmp_path / "twin.npz")
    _rewrite_header(tmp_path / "twin.npz", module=None)
    with pytest.raises(ModelFileError, match=r"twin\.npz.*registry_a\.TwinNet and registry_b\.TwinNet"):
        tinycnn.load_model(tmp_path / "twin.npz")


def test_lookup_rules():
    registry = ClassRegistry()

    class Conv:
        pass
    Conv.__module__, Conv.__qualname__ = "tasks.plates_models", "Conv"
    registry.register(Conv)
    assert list(registry) == ["tinycnn.tasks.plates_models.Conv"]  # tasks/ is tinycnn.tasks
    assert registry.lookup("Conv", "tasks.plates_models") is Conv
    assert registry["Conv"] is Conv and registry["tinycnn.tasks.plates_models.Conv"] is Conv
    assert registry.get("Missing") is None and "Missing" not in registry

    class Other:
        pass
    Other.__module__, Other.__qualname__ = "elsewhere", "Conv"
    registry.register(Other)
    assert registry.lookup("Conv", "elsewhere") is Other
    with pytest.raises(AmbiguousClassError, match="elsewhere.Conv and tinycnn.tasks.plates_models.Conv"):
        registry["Conv"]

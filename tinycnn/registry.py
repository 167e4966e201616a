"""The classes `load_model` can rebuild, keyed by module and class: "tinycnn.layers.Conv2D".

Every Module subclass registers itself when it is defined (nn.Module.__init_subclass__). A model file stores
its class's name and module (saving.py) and is rebuilt from its config: nothing is unpickled. Two classes
with the same name in different modules are two entries; neither replaces the other.

    CLASSES["tinycnn.tasks.plates_models.PlateBoxRegressor"]   # by module and class
    CLASSES["PlateBoxRegressor"]                               # by bare name: files from before, configs

A bare name (what older model files and layer configs store) is found when exactly one registered class has
it; when several do, the lookup fails with an error that names each candidate. `tasks.*` and `tinycnn.tasks.*`
are one module (tasks/ is installed as tinycnn.tasks; a source checkout can import it under either name).

A user's layer or model registered once under a package name (Keras' `register_keras_serializable`) is saved
under that name instead of its module's, so a file made in a notebook (module `__main__`) loads in any script
that defines or imports the class:

    @tinycnn.saving.register_serializable(package="my_layers")
    class Scale(tinycnn.layers.Layer): ...          # saved as class "Scale", module "my_layers"
"""


def canonical_module(module):
    """`tasks.x` -> `tinycnn.tasks.x`: the name tasks/ is installed under."""
    return "tinycnn." + module if module == "tasks" or module.startswith("tasks.") else module


class AmbiguousClassError(LookupError):
    """A bare class name that more than one registered class has."""


class ClassRegistry:
    """{"module.Class": class}, looked up by that key or by a bare class name when it is unambiguous."""

    def __init__(self):
        self._classes = {}

    def register(self, cls):
        self._classes[self.key(cls)] = cls
        return cls

    def register_as(self, cls, package, name):
        cls._registered_as = (package, name)
        self._classes[f"{package}.{name}"] = cls
        return cls

    @staticmethod
    def describe(cls):
        """(class name, module) as a model file stores them: a registered package name wins."""
        registered = cls.__dict__.get("_registered_as")
        if registered is not None:
            return registered[1], registered[0]
        return cls.__name__, cls.__module__

    @staticmethod
    def key(cls):
        return f"{canonical_module(cls.__module__)}.{cls.__qualname__}"

    def lookup(self, name, module=""):
        """The class `name` of `module` (or, without a module or when that pair is unknown, the one class
        called `name`); None when no registered class has that name. AmbiguousClassError when several do."""
        if module:
            found = self._classes.get(f"{canonical_module(module)}.{name}")
            if found is not None:
                return found
        if "." in name and name in self._classes:
            return self._classes[name]
        candidates, classes = [], set()
        for key, cls in sorted(self._classes.items()):
            named = cls.__qualname__ == name or cls.__dict__.get("_registered_as", ("", ""))[1] == name
            if named and id(cls) not in classes:  # a class under two keys is one candidate
                candidates.append(key)
                classes.add(id(cls))
        if len(candidates) > 1:
            raise AmbiguousClassError(f"class name {name!r} is ambiguous: {' and '.join(candidates)} are both "
                                      "registered; the model file does not say which")
        return self._classes[candidates[0]] if candidates else None

    # dict-style access (Module.registry["Conv2D"], .get, in), by key or bare name
    def get(self, name, default=None):
        found = self.lookup(name)
        return default if found is None else found

    def __getitem__(self, name):
        found = self.lookup(name)
        if found is None:
            raise KeyError(name)
        return found

    def __contains__(self, name):
        return self.lookup(name) is not None

    def __iter__(self):
        return iter(self._classes)

    def __len__(self):
        return len(self._classes)


CLASSES = ClassRegistry()


def register_serializable(package="Custom", name=None):
    """Class decorator: save this layer or model under `package` (and `name`, default the class name), so
    load_model finds it by that name wherever the class is defined (Keras' register_keras_serializable)."""
    def register(cls):
        return CLASSES.register_as(cls, str(package), str(name or cls.__name__))
    return register


def from_config(cls, config):
    """An instance of a registered class from its saved config: its from_config if it has one, else
    cls(**config)."""
    return cls.from_config(config) if hasattr(cls, "from_config") else cls(**config)


def layer_class(spec, where="the model file"):
    """The class of a saved layer spec {"class", "module"?}; a ValueError naming it when none is registered."""
    found = CLASSES.lookup(spec["class"], spec.get("module", ""))
    if found is None:
        raise ValueError(f"unknown layer class {spec['class']!r} (module {spec.get('module', '?')!r}) in {where}: a "
                         "user layer's module must be imported (or the class registered with "
                         "tinycnn.saving.register_serializable) before loading")
    return found

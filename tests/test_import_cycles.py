"""The package's import graph, read from the source with `ast` (nothing is imported): no cycles, and the
engine (tinycnn/) never imports the tasks.

Every `import` and `from ... import` statement counts, at module level or inside a function: a function-level
import only defers a cycle to the first call, it does not remove it. An edge goes from a module to each
module it names: `from . import losses` and `from .ops import basic` name the submodules
tinycnn.losses and tinycnn.ops.basic; `from .tensor import Tensor` names tinycnn.tensor. A package's
`__init__` (a facade that re-exports) is not counted as imported by its submodules' imports: importing
`tinycnn.tensor` runs `tinycnn/__init__.py` first, but `tensor.py` does not depend on what that re-exports.
One exception, named: imports at the very bottom of a module, after all its classes and functions, are
re-exports (tinycnn/layers.py gathers the layer families of other files into one `layers` namespace, and
those files subclass its `Layer`). The module's own code cannot use them, so they are not its dependencies;
the package's `__init__` imports `layers` first, so its base classes exist when the re-exported files ask.
`kernels/` and `tasks/` are installed as `tinycnn.kernels` and `tinycnn.tasks`; `tasks.x` and
`tinycnn.tasks.x` are the same module. Modules outside tinycnn/ and tasks/ (NumPy, the kernels) are leaves.

The CLI entry points (`python -m tinycnn.train TASK`, `python -m tinycnn.redact`) find the task modules by
name at run time (`importlib.import_module`), the way a plugin is loaded: no import statement, no edge.
"""
import ast
import os

from test_kernel_contract import cycles  # Tarjan's strongly connected components, shared with the kernels' check

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = {"tinycnn": os.path.join(ROOT, "tinycnn"), "tinycnn.tasks": os.path.join(ROOT, "tasks")}


def _modules():
    """{dotted name: path} of every .py file under tinycnn/ and tasks/."""
    found = {}
    for package, folder in SOURCES.items():
        for directory, _, files in os.walk(folder):
            for file in files:
                if not file.endswith(".py"):
                    continue
                parts = os.path.relpath(os.path.join(directory, file), folder)[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                found[".".join([package] + parts)] = os.path.join(directory, file)
    return found


def _canonical(name):
    return "tinycnn." + name if name == "tasks" or name.startswith("tasks.") else name


def _is_package(name, path):
    return path.endswith("__init__.py")


def _edges(name, path, modules):
    """The modules of the package that `name` imports."""
    package = name if _is_package(name, path) else name.rpartition(".")[0]
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    targets = set()
    for node in _dependency_nodes(tree):
        if isinstance(node, ast.Import):
            targets.update(_canonical(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = _canonical(node.module)
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                targets.add(submodule if submodule in modules else source)
    return {t for t in targets if t in modules and t != name}


def _dependency_nodes(tree):
    """Every node of the module but its bottom re-exports (imports after the last class or function)."""
    body = tree.body
    definitions = [i for i, node in enumerate(body) if isinstance(node, (ast.FunctionDef, ast.ClassDef))]
    end = definitions[-1] + 1 if definitions else len(body)
    for node in body[:end] + [n for n in body[end:] if not isinstance(n, (ast.Import, ast.ImportFrom))]:
        yield from ast.walk(node)


def import_graph():
    modules = _modules()
    return {name: _edges(name, path, modules) for name, path in modules.items()}


def test_the_graph_is_read():
    graph = import_graph()
    assert "tinycnn.ops.basic" in graph["tinycnn.functional"]
    assert "tinycnn.plan" in graph["tinycnn.trainer"] and "tinycnn.fuse" in graph["tinycnn.plan"]
    assert "tinycnn.tensor" in graph["tinycnn.nn"]
    assert "tinycnn.layers" in graph["tinycnn.tasks.plates_models"]  # `from tinycnn import layers`


def test_cycles_are_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    found = cycles(import_graph())
    assert found == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_the_engine_does_not_import_the_tasks():
    graph = import_graph()
    engine = [name for name in graph if not name.startswith("tinycnn.tasks")]
    offenders = {name: sorted(t for t in graph[name] if t.startswith("tinycnn.tasks")) for name in engine}
    assert {name: found for name, found in offenders.items() if found} == {}

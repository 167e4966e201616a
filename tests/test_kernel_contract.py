"""The kernel contract (kernels/contract.py): every backend (reference, cpu, cuda under the simulator that
tests/conftest.py switches on) declares CAPABILITIES and has every function of its families, and of its
declared capabilities, with the contract's signature (inspect.signature); the check itself catches a missing
function, a renamed or reordered parameter, a changed default and an undeclared family."""
import importlib
import inspect
import types

import numpy as np
import pytest

from tinycnn.kernels import contract

BACKENDS = ["reference", "cpu", "cuda"]


def _backend(name):
    package = importlib.import_module(f"tinycnn.kernels.{name}")
    families = {family: importlib.import_module(f"tinycnn.kernels.{name}.{family}") for family in package.CAPABILITIES}
    return package, families


@pytest.mark.parametrize("name", BACKENDS)
def test_backend_keeps_the_contract(name):
    package, families = _backend(name)
    assert contract.problems(package, families) == []


def test_cpu_and_cuda_have_every_family():
    for name in ("cpu", "cuda"):
        assert set(_backend(name)[0].CAPABILITIES) == set(contract.REQUIRED), name


def test_the_cpu_declares_its_fused_kernels():
    capabilities = _backend("cpu")[0].CAPABILITIES
    assert contract.has(capabilities, "conv", "fused_relu")
    assert contract.has(capabilities, "batchnorm", "fused_activation")
    assert not contract.has(capabilities, "pool", "fused_relu")


def _fake_backend(**functions):
    """A one-family backend ("linear", no optional capabilities) whose module holds `functions`."""
    module = types.ModuleType("fake.linear")
    for name, function in functions.items():
        setattr(module, name, function)
    package = types.ModuleType("fake")
    package.CAPABILITIES = {"linear": set()}
    return package, {"linear": module}


def _matmul(a, b):
    return a @ b


def _forward(x, w, b):
    return x @ w.T + b


def test_the_check_finds_what_is_wrong():
    def backward(dy, x, w, need_dx, need_dw, need_db):
        return None, None, None
    assert contract.problems(*_fake_backend(matmul=_matmul, linear_forward=_forward, linear_backward=backward)) == []

    def no_flags(dy, x, w):
        return None, None, None
    found = contract.problems(*_fake_backend(matmul=_matmul, linear_forward=_forward, linear_backward=no_flags))
    assert len(found) == 1 and "linear_backward" in found[0] and "need_dx" in found[0]

    def swapped(dy, w, x, need_dx, need_dw, need_db):
        return None, None, None
    assert "linear_backward" in contract.problems(*_fake_backend(matmul=_matmul, linear_forward=_forward,
                                                                 linear_backward=swapped))[0]
    found = contract.problems(*_fake_backend(matmul=_matmul, linear_backward=backward))
    assert found == ["fake.linear: missing linear_forward(x, w, b)"]

    def extra_required(dy, x, w, need_dx, need_dw, need_db, scale):
        return None, None, None
    assert "without defaults" in contract.problems(*_fake_backend(matmul=_matmul, linear_forward=_forward,
                                                                  linear_backward=extra_required))[0]


def test_the_check_reads_defaults_capabilities_and_ufuncs():
    package, modules = _backend("cpu")
    loss = types.ModuleType("fake.loss")
    for name in contract.REQUIRED["loss"]:
        setattr(loss, name, getattr(modules["loss"], name))

    def bce_forward(p, t, eps, weight=1.0):
        return 0.0
    loss.bce_forward = bce_forward
    fake = types.ModuleType("fake")
    fake.CAPABILITIES = {"loss": set()}
    assert contract.problems(fake, {"loss": loss}) == ["fake.loss.bce_forward: default of weight is 1.0, "
                                                       "the contract's None"]
    fake.CAPABILITIES = {"loss": {"fused_relu"}}
    assert "unknown loss capabilities" in contract.problems(fake, {"loss": loss})[0]
    fake.CAPABILITIES = {"conv": {"channels_last"}}  # without its functions, and without asymmetric_padding
    found = contract.problems(fake, {"conv": types.ModuleType("fake.conv")})
    assert any("needs conv asymmetric_padding" in f for f in found)
    assert any("missing conv2d_channels_last_forward" in f for f in found)
    assert contract.signature_mismatch(np.add, contract.REQUIRED["elementwise"]["add"]) is None
    assert "positional inputs" in contract.signature_mismatch(np.exp, contract.REQUIRED["elementwise"]["add"])


def test_signature_parses_the_tables():
    sig = contract.signature("dy3, x3, need_dx, y3=None, activation='relu'")
    assert list(sig.parameters) == ["dy3", "x3", "need_dx", "y3", "activation"]
    assert sig.parameters["y3"].default is None and sig.parameters["activation"].default == "relu"


# ---------------------------------------------------------------------- the composed defaults (kernels/compose.py)

def test_every_optional_capability_has_a_default_or_is_handled_by_the_op_layer():
    from tinycnn.kernels import compose
    for family, capabilities in contract.OPTIONAL.items():
        for capability, functions in capabilities.items():
            if (family, capability) in compose.NOT_COMPOSED:
                assert family not in compose.DEFAULTS or capability not in compose.DEFAULTS[family]
                continue
            defaults = {f.__name__: f for f in compose.DEFAULTS[family][capability]}
            assert set(defaults) == set(functions), (family, capability)
            for name, wanted in functions.items():  # the contract's signature after (kernels, native)
                params = list(inspect.signature(defaults[name]).parameters.values())[2:]
                assert contract.signature_mismatch(_with_signature(params), wanted) is None, name


def _with_signature(params):
    def function(*args, **kwargs):
        pass
    function.__signature__ = inspect.Signature(params)
    return function


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_composed_defaults_match_the_cpu_fused_kernels(dtype):
    """The CPU's kernel families seen without their fused capabilities: the compositions give the fused
    kernels' values (conv + bias + relu / relu6, its gradients, the pooled form; batch norm + activation)."""
    from tinycnn.device import kernels_for
    from tinycnn.kernels import compose
    from tinycnn.kernels.cpu import batchnorm, conv
    k = kernels_for("cpu")
    plain_conv = compose.with_defaults(k, "conv", conv, {"asymmetric_padding", "channels_last"})
    plain_bn = compose.with_defaults(k, "batchnorm", batchnorm, set())
    assert isinstance(plain_conv, compose.FamilyWithDefaults) and compose.with_defaults(
        k, "conv", conv, k.capabilities["conv"]) is conv
    rng = np.random.default_rng(3)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in ((2, 3, 6, 7), (4, 3, 3, 3), (4,)))
    geometry = (1, 1), (1, 1), (1, 1), 1
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    y = conv.conv2d_bias_relu_forward(x, w, b, *geometry).copy()
    np.testing.assert_allclose(plain_conv.conv2d_bias_relu_forward(x, w, b, *geometry), y, **tol)
    for activation in (None, "relu", "relu6"):
        np.testing.assert_allclose(plain_conv.conv2d_bias_act_forward(x, w, b, *geometry, activation),
                                   conv.conv2d_bias_act_forward(x, w, b, *geometry, activation), **tol)
    np.testing.assert_allclose(plain_conv.conv2d_bias_relu_maxpool2_forward(x, w, b, *geometry),
                               conv.conv2d_bias_relu_maxpool2_forward(x, w, b, *geometry), **tol)
    dy = rng.standard_normal(y.shape).astype(dtype)
    want = [g.copy() for g in conv.conv2d_bias_relu_backward(dy, y, x, w, *geometry, True, True, True)]
    for got, expected in zip(plain_conv.conv2d_bias_relu_backward(dy, y, x, w, *geometry, True, True, True), want):
        np.testing.assert_allclose(got, expected, **tol)
    x3, gamma, beta = rng.standard_normal((4, 3, 5)).astype(dtype), np.full(3, 1.5, dtype), np.full(3, 0.2, dtype)
    for activation in ("relu", "relu6"):
        fused = [a.copy() for a in batchnorm.batch_norm_train_forward(x3, gamma, beta, 1e-5, activation=activation)]
        composed = plain_bn.batch_norm_train_forward(x3, gamma, beta, 1e-5, activation=activation)
        for got, expected in zip(composed, fused):
            np.testing.assert_allclose(got, expected, **tol)
        dy3 = rng.standard_normal(x3.shape).astype(dtype)
        want = [g.copy() for g in batchnorm.batch_norm_backward(dy3, x3, gamma, fused[1], fused[2], True, True, True,
                                                                y3=fused[0], activation=activation)]
        got = plain_bn.batch_norm_backward(dy3, x3, gamma, fused[1], fused[2], True, True, True, y3=fused[0],
                                           activation=activation, beta=beta)
        for g, e in zip(got, want):
            np.testing.assert_allclose(g, e, **tol)
        np.testing.assert_allclose(
            plain_bn.batch_norm_eval_forward(x3, gamma, beta, fused[1], fused[3], 1e-5, activation=activation),
            batchnorm.batch_norm_eval_forward(x3, gamma, beta, fused[1], fused[3], 1e-5, activation=activation), **tol)


# ---------------------------------------------------------------------- no import cycle in kernels/ and the op layer
#
# The import graph read from the source with `ast` (nothing is imported): every `import` and `from ... import`,
# at module level or inside a function (a function-level import defers a cycle, it does not remove it). An
# edge goes to each module named: `from . import reduce` and `from .ops import basic` name the submodules,
# `from .layout import full` names layout. kernels/ installs as tinycnn.kernels. Covered: kernels/,
# tinycnn/ops/ and tinycnn/device.py (the rest of tinycnn/ has tests/test_import_cycles.py).

import ast  # noqa: E402
import os  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COVERED = {"tinycnn.kernels": "kernels", "tinycnn.ops": os.path.join("tinycnn", "ops")}


def _covered_modules():
    """{dotted name: (path, is_package)} of every module under COVERED, and tinycnn.device."""
    found = {"tinycnn.device": (os.path.join(ROOT, "tinycnn", "device.py"), False)}
    for package, folder in COVERED.items():
        for directory, _, files in os.walk(os.path.join(ROOT, folder)):
            for file in (f for f in files if f.endswith(".py")):
                parts = os.path.relpath(os.path.join(directory, file), os.path.join(ROOT, folder))[:-3].split(os.sep)
                is_package = parts[-1] == "__init__"
                name = ".".join([package] + (parts[:-1] if is_package else parts))
                found[name] = (os.path.join(directory, file), is_package)
    return found


def imported_modules(name, is_package, source, known):
    """The modules of `known` that the module `name` (its source text) imports."""
    package = name if is_package else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            for alias in node.names:  # a submodule by name, else the module itself
                targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {t for t in targets if t in known and t != name}


def cycles(graph):
    """The strongly connected components of more than one module (Tarjan), each as a sorted list."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_in_the_kernels_and_the_op_layer():
    modules = _covered_modules()
    assert "tinycnn.kernels.cpu.conv.winograd" in modules and "tinycnn.ops.conv" in modules
    graph = {name: imported_modules(name, is_package, open(path, encoding="utf-8").read(), modules)
             for name, (path, is_package) in modules.items()}
    assert "tinycnn.kernels.cuda.layout" in graph["tinycnn.kernels.cuda.reduce"]
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_cycle():
    known = {"tinycnn.kernels.cuda", "tinycnn.kernels.cuda.elementwise", "tinycnn.kernels.cuda.reduce"}
    elementwise = "def sum_to_shape(g, shape):\n    from . import reduce\n"  # the cycle this replaced
    reduce = "from .elementwise import full, padded\n"
    graph = {"tinycnn.kernels.cuda.elementwise": imported_modules("tinycnn.kernels.cuda.elementwise", False,
                                                                   elementwise, known),
             "tinycnn.kernels.cuda.reduce": imported_modules("tinycnn.kernels.cuda.reduce", False, reduce, known)}
    assert cycles(graph) == [["tinycnn.kernels.cuda.elementwise", "tinycnn.kernels.cuda.reduce"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"d"}}) == []
    assert imported_modules("tinycnn.kernels.cpu.conv.im2col", False, "from ..gemm import matmul\n",
                            {"tinycnn.kernels.cpu.gemm"}) == {"tinycnn.kernels.cpu.gemm"}

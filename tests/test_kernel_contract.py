"""The kernel contract (kernels/contract.py): every backend (reference, cpu, cuda under the simulator that
tests/conftest.py switches on) declares CAPABILITIES and has every function of its families, and of its
declared capabilities, with the contract's signature (inspect.signature); the check itself catches a missing
function, a renamed or reordered parameter, a changed default and an undeclared family."""
import importlib
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

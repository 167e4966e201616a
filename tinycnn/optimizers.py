"""Optimizers and learning-rate schedules, for both ways of training.

Keras: made without the parameters, which model.compile gives them (`build`):

    model.compile(loss="mse", optimizer=tinycnn.optimizers.Adam(learning_rate=1e-3))   # or optimizer="adam"

PyTorch: made with them, stepped by hand (`tinycnn.optim` is this module under PyTorch's name):

    opt = optim.Adam(model.parameters(), lr=1e-3)
    sched = optim.CosineWithWarmup(opt, total_steps=epochs * len(loader), warmup_steps=100)
    for x, y in loader:
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
        sched.step()

An optimizer updates each parameter's `.data` in place with the kernel of its device (`k.optim.sgd_step`,
`k.optim.adam_step`); its state (momentum buffers, Adam's moments) lives on the same device. Parameters
whose `.grad` is None are skipped. `state_dict()` holds only numbers, strings and NumPy arrays, so it can be
saved with `numpy.savez` or JSON plus arrays, no pickle. A model file keeps the Keras-style arguments an
optimizer was made with (`to_config`) and its state.

The formulas are PyTorch's (see kernels/cpu/optim.py); only Adam's default eps differs (1e-7, as Keras).
Keras' argument names (learning_rate, beta_1, beta_2, epsilon) are accepted beside PyTorch's (lr, betas, eps);
weight_decay is L2 through the gradient for SGD and Adam, decoupled for AdamW.

Weight averaging (Keras 3's arguments, on every optimizer): `use_ema=True` keeps an exponential moving average
of each parameter, updated after every step t = 1, 2, ... (`iterations` counts them):

    average_1 = θ_1,    average_t = m · average_{t-1} + (1 − m) · θ_t        (m = ema_momentum, default 0.99)

`ema_overwrite_frequency=N` copies the averages into the parameters every N steps (Keras'); `swap_ema_weights()`
exchanges parameters and averages (so validation and saving see the averages; `ema_in_model` says which are in
the model, and is saved); `finalize_variable_values()` copies the averages in for good. The callback that swaps
them around validation and checkpoints during fit is tinycnn.ema.SwapEMAWeights.

A learning rate may be a schedule (`learning_rate=CosineDecay(...)`, as Keras): a callable of the step number
that the optimizer asks before every step, saved in the model file by its config.
"""
import math
import numbers

import numpy as np

from .device import kernels_for
from .tensor import Tensor, no_grad


class Optimizer:
    """Holds the parameters, the learning rate `lr` (settable; `learning_rate` is the same) and per-parameter
    state arrays. Made with its parameters, or without them and then `build(params)` (model.compile does)."""

    hyperparameters = ()  # names of the settings saved in state_dict (besides lr)
    state_names = ()      # names of the per-parameter state arrays
    params = None         # None until built
    schedule = None       # a learning-rate schedule (callable of the step number), or None for a fixed lr
    use_ema = False

    def __init__(self, params, lr, use_ema=False, ema_momentum=0.99, ema_overwrite_frequency=None):
        if callable(lr):
            self.schedule, lr = lr, lr(0)
        _check_non_negative(type(self).__name__, "lr", lr)
        self.lr = float(lr)
        self._set_ema(use_ema, ema_momentum, ema_overwrite_frequency)
        if params is not None:
            self.build(params)

    def _set_ema(self, use_ema, ema_momentum, ema_overwrite_frequency):
        name = type(self).__name__
        if not 0.0 <= ema_momentum < 1.0:
            raise ValueError(f"{name}: ema_momentum must be in [0, 1), got {ema_momentum!r}")
        if ema_overwrite_frequency is not None and (not isinstance(ema_overwrite_frequency, int) or
                                                    ema_overwrite_frequency < 1):
            raise ValueError(f"{name}: ema_overwrite_frequency must be None or an int ≥ 1, "
                             f"got {ema_overwrite_frequency!r}")
        self.use_ema, self.ema_momentum = bool(use_ema), float(ema_momentum)
        self.ema_overwrite_frequency = ema_overwrite_frequency
        if self.use_ema:  # in the saved config only when on, so files of optimizers without it stay as they were
            self.config.update(use_ema=True, ema_momentum=self.ema_momentum,
                               ema_overwrite_frequency=ema_overwrite_frequency)

    def build(self, params):
        """Take the parameters to train (a Keras-style optimizer gets them from model.compile); returns self."""
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(f"{type(self).__name__}: parameter {i} is a {type(p).__name__}, not a Tensor")
        self.params = params
        self.state = [{} for _ in self.params]  # per parameter: "step" (int) and the state arrays
        self.iterations = 0                      # step() calls so far
        self.averages = [None] * len(params)     # the moving averages (use_ema), made at the first step
        self.ema_in_model = False                # True while swap_ema_weights() has put the averages in
        return self

    @property
    def built(self):
        return self.params is not None

    @property
    def learning_rate(self):  # Keras' name
        return self.lr

    @learning_rate.setter
    def learning_rate(self, value):
        self.lr = float(value)

    def _check_built(self):
        if self.params is None:
            raise RuntimeError(f"{type(self).__name__} has no parameters yet: pass them when you make it, "
                               "call build(params), or give it to model.compile")

    def zero_grad(self):
        self._check_built()
        for p in self.params:
            p.grad = None

    def step(self):
        """Update every parameter that has a gradient, in place (then the averages, with use_ema)."""
        self._check_built()
        if self.ema_in_model:
            raise RuntimeError(f"{type(self).__name__}: the model holds the averaged (EMA) weights; call "
                               "optimizer.swap_ema_weights() to train on, or finalize_variable_values() to keep them")
        if self.schedule is not None:
            self.lr = float(self.schedule(self.iterations))
        with no_grad():
            for p, state in zip(self.params, self.state):
                if p.grad is None:
                    continue
                if not state:
                    k = kernels_for(p.device)
                    state.update({name: k.elementwise.zeros_like(p.data) for name in self.state_names})
                    state["step"] = 0
                state["step"] += 1
                self._update(kernels_for(p.device).optim, p.data, _grad_array(p), state)
                p.bump_version()
        self.iterations += 1
        if self.use_ema:
            self._update_averages()
            if self.ema_overwrite_frequency and self.iterations % self.ema_overwrite_frequency == 0:
                self.finalize_variable_values()

    # ------------------------------------------------------------------ weight averaging (use_ema)
    def _update_averages(self):
        """average ← m · average + (1 − m) · θ for every parameter; the first step starts the averages at θ."""
        m = self.ema_momentum
        for i, p in enumerate(self.params):
            k = kernels_for(p.device).elementwise
            if self.averages[i] is None:
                self.averages[i] = k.copy(p.data)
            elif isinstance(p.data, np.ndarray):
                average = self.averages[i]
                average *= m
                average += (1.0 - m) * p.data
            else:  # device arrays: the device's elementwise kernels
                self.averages[i] = k.add(k.mul(self.averages[i], m), k.mul(p.data, 1.0 - m))

    def swap_ema_weights(self):
        """Exchange the parameters and their moving averages (no copy); twice gives back the training weights."""
        self._check_built()
        if not self.use_ema:
            raise RuntimeError(f"{type(self).__name__}: swap_ema_weights needs use_ema=True")
        if any(a is None for a in self.averages):
            return  # no step yet: nothing averaged
        for i, p in enumerate(self.params):
            p.data, self.averages[i] = self.averages[i], p.data
            p.bump_version()
        self.ema_in_model = not self.ema_in_model

    def finalize_variable_values(self):
        """Put the averages into the parameters for good (Keras' name; also every ema_overwrite_frequency steps)."""
        self._check_built()
        if not self.use_ema or any(a is None for a in self.averages):
            return
        if self.ema_in_model:  # the parameters hold the averages already: make the averages equal them
            self.averages = [kernels_for(p.device).elementwise.copy(p.data) for p in self.params]
            self.ema_in_model = False
            return
        for p, average in zip(self.params, self.averages):
            p.data = kernels_for(p.device).elementwise.copy(average)
            p.bump_version()

    def _update(self, k_optim, param, grad, state):
        raise NotImplementedError

    # ------------------------------------------------------------------ saving and loading
    def state_dict(self):
        """A flat dict: "type", "lr", the hyperparameters, and "param.<i>.<name>" for each parameter's step
        count and state arrays (copied to NumPy)."""
        self._check_built()
        d = {"type": type(self).__name__, "lr": self.lr}
        for name in self.hyperparameters:
            value = getattr(self, name)
            d[name] = list(value) if isinstance(value, tuple) else value
        for i, state in enumerate(self.state):
            if not state:
                continue
            d[f"param.{i}.step"] = int(state["step"])
            k = kernels_for(self.params[i].device)
            for name in self.state_names:
                d[f"param.{i}.{name}"] = np.array(k.elementwise.to_numpy(state[name]), copy=True)
        if self.use_ema:
            d.update(iterations=self.iterations, ema_in_model=self.ema_in_model)
            for i, (p, average) in enumerate(zip(self.params, self.averages)):
                if average is not None:
                    d[f"param.{i}.ema"] = np.array(kernels_for(p.device).elementwise.to_numpy(average), copy=True)
        return d

    def load_state_dict(self, d):
        """Restore what state_dict() gave (values may come back from numpy.load as 0-d arrays)."""
        kind = str(_plain(d["type"]))
        if kind != type(self).__name__:
            raise ValueError(f"{type(self).__name__}.load_state_dict: the state dict is for {kind}")
        self.lr = float(_plain(d["lr"]))
        for name in self.hyperparameters:
            value = _plain(d[name])
            setattr(self, name, tuple(float(v) for v in value) if isinstance(value, (list, tuple)) else value)
        self._check_built()
        self.state = [{} for _ in self.params]
        for i, p in enumerate(self.params):
            if f"param.{i}.step" not in d:
                continue
            k = kernels_for(p.device)
            state = {"step": int(_plain(d[f"param.{i}.step"]))}
            for name in self.state_names:
                array = np.asarray(d[f"param.{i}.{name}"])
                if array.shape != p.shape:
                    raise ValueError(f"{type(self).__name__}.load_state_dict: {name} of parameter {i} has shape "
                                     f"{array.shape}, the parameter {p.shape}")
                state[name] = k.elementwise.asarray(array, p.dtype)
            self.state[i] = state
        self.iterations = int(_plain(d.get("iterations", max([s.get("step", 0) for s in self.state] + [0]))))
        self.ema_in_model = bool(_plain(d.get("ema_in_model", False)))
        self.averages = [None if f"param.{i}.ema" not in d else
                         kernels_for(p.device).elementwise.asarray(np.asarray(d[f"param.{i}.ema"]), p.dtype)
                         for i, p in enumerate(self.params)]


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum (PyTorch's form), dampening, nesterov and L2."""

    hyperparameters = ("momentum", "dampening", "weight_decay", "nesterov")

    def __init__(self, params=None, lr=None, momentum=0, dampening=0, weight_decay=0, nesterov=False, *,
                 learning_rate=None, use_ema=False, ema_momentum=0.99, ema_overwrite_frequency=None):
        params, lr = _params_and_rate(params, lr, learning_rate, default=0.01)
        for name, value in (("momentum", momentum), ("weight_decay", weight_decay)):
            _check_non_negative("SGD", name, value)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: nesterov needs momentum > 0 and dampening = 0")
        self.momentum, self.dampening = float(momentum), float(dampening)
        self.weight_decay, self.nesterov = float(weight_decay), bool(nesterov)
        self.config = dict(learning_rate=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
        if dampening:
            self.config["dampening"] = dampening
        super().__init__(params, lr, use_ema, ema_momentum, ema_overwrite_frequency)

    @property
    def state_names(self):  # a momentum buffer only when there is momentum
        return ("momentum_buffer",) if self.momentum != 0 else ()

    def _update(self, k_optim, param, grad, state):
        k_optim.sgd_step(param, grad, state.get("momentum_buffer"), self.lr, self.momentum, self.dampening,
                         self.weight_decay, self.nesterov, state["step"] == 1)


class Adam(Optimizer):
    """Adam; weight_decay adds λθ to the gradient (L2), as torch.optim.Adam. Keras' names: beta_1, beta_2,
    epsilon for betas and eps."""

    hyperparameters = ("betas", "eps", "weight_decay")
    state_names = ("m", "v")
    decoupled = False

    def __init__(self, params=None, lr=None, betas=(0.9, 0.999), eps=1e-7, weight_decay=0, *,
                 learning_rate=None, beta_1=None, beta_2=None, epsilon=None, use_ema=False, ema_momentum=0.99,
                 ema_overwrite_frequency=None):
        params, lr = _params_and_rate(params, lr, learning_rate, default=1e-3)
        betas = (betas[0] if beta_1 is None else beta_1, betas[1] if beta_2 is None else beta_2) \
            if len(betas) == 2 else betas
        eps = eps if epsilon is None else epsilon
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"{type(self).__name__}: betas must be two numbers in [0, 1), got {betas!r}")
        _check_non_negative(type(self).__name__, "eps", eps)
        _check_non_negative(type(self).__name__, "weight_decay", weight_decay)
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps, self.weight_decay = float(eps), float(weight_decay)
        self.config = dict(learning_rate=lr, beta_1=betas[0], beta_2=betas[1], epsilon=eps, weight_decay=weight_decay)
        super().__init__(params, lr, use_ema, ema_momentum, ema_overwrite_frequency)

    def _update(self, k_optim, param, grad, state):
        k_optim.adam_step(param, grad, state["m"], state["v"], self.lr, self.betas[0], self.betas[1], self.eps,
                          self.weight_decay, self.decoupled, state["step"])


class AdamW(Adam):
    """Adam with decoupled weight decay: θ ← θ (1 − η λ) before the Adam update, as torch.optim.AdamW."""

    decoupled = True

    def __init__(self, params=None, lr=None, betas=(0.9, 0.999), eps=1e-7, weight_decay=1e-2, **keras_names):
        super().__init__(params, lr, betas, eps, weight_decay, **keras_names)


_NAMES = {"adam": Adam, "adamw": AdamW, "sgd": SGD}


def get(spec):
    """The optimizer for model.compile: from a name ('adam'), a {'name': ..., 'config': {...}} dict (a model
    file's), or an optimizer itself."""
    if isinstance(spec, str):
        if spec.lower() not in _NAMES:
            raise ValueError(f"unknown optimizer {spec!r}; choose one of {sorted(_NAMES)}")
        return _NAMES[spec.lower()]()
    if isinstance(spec, dict):
        config = dict(spec["config"])
        if isinstance(config.get("learning_rate"), dict):  # a schedule, as to_config wrote it
            config["learning_rate"] = schedule_from_config(config["learning_rate"])
        return _NAMES[spec["name"]](**config)
    if hasattr(spec, "build"):
        return spec
    raise TypeError("optimizer must be a name or a tinycnn.optimizers optimizer (Adam, AdamW, SGD)")


def to_config(optimizer):
    """{'name': 'adam', 'config': the Keras-style arguments it was made with}: what a model file keeps."""
    name = {v: k for k, v in _NAMES.items()}[type(optimizer)]
    config = dict(optimizer.config)
    if isinstance(config["learning_rate"], LearningRateSchedule):
        config["learning_rate"] = config["learning_rate"].to_config()
    return {"name": name, "config": config}


def _params_and_rate(params, lr, learning_rate, default):
    """(params, lr) from either convention: PyTorch's (params, lr) or Keras' (learning_rate, no params);
    a number first is Keras' positional learning rate."""
    if (isinstance(params, numbers.Real) and not isinstance(params, bool)) or isinstance(params, LearningRateSchedule):
        params, learning_rate = None, params
    if lr is not None and learning_rate is not None:
        raise ValueError("give the learning rate once: lr (PyTorch's name) or learning_rate (Keras')")
    rate = lr if lr is not None else learning_rate
    return params, default if rate is None else rate


def _grad_array(p):
    grad = p.grad.data if isinstance(p.grad, Tensor) else p.grad
    if tuple(grad.shape) != p.shape:
        raise ValueError(f"optimizer: a gradient of shape {tuple(grad.shape)} for a parameter of shape {p.shape}")
    return grad


def _check_non_negative(owner, name, value):
    if not isinstance(value, (int, float)) or value < 0 or math.isnan(value):
        raise ValueError(f"{owner}: {name} must be a number ≥ 0, got {value!r}")


def _plain(value):
    """0-d arrays (what numpy.load gives back) -> Python values; lists and strings unchanged."""
    if isinstance(value, np.ndarray):
        return value.item() if value.ndim == 0 else value.tolist()
    return value


# ---------------------------------------------------------------------- learning-rate schedules

class LRSchedule:
    """Sets optimizer.lr = get_lr() now and after every step(); call step() once per epoch or per batch."""

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.steps = 0  # how many times step() was called
        self.optimizer.lr = self.get_lr()

    def step(self):
        self.steps += 1
        self.optimizer.lr = self.get_lr()
        return self.optimizer.lr

    def get_lr(self):
        raise NotImplementedError

    def state_dict(self):
        return {"steps": self.steps, "base_lr": self.base_lr}

    def load_state_dict(self, d):
        self.steps, self.base_lr = int(_plain(d["steps"])), float(_plain(d["base_lr"]))
        self.optimizer.lr = self.get_lr()


class StepLR(LRSchedule):
    """lr = base_lr · gamma^⌊steps / step_size⌋ (as torch.optim.lr_scheduler.StepLR)."""

    def __init__(self, optimizer, step_size, gamma=0.1):
        if not isinstance(step_size, int) or step_size < 1:
            raise ValueError(f"StepLR: step_size must be an int ≥ 1, got {step_size!r}")
        self.step_size, self.gamma = step_size, float(gamma)
        super().__init__(optimizer)

    def get_lr(self):
        return self.base_lr * self.gamma ** (self.steps // self.step_size)


class CosineWithWarmup(LRSchedule):
    """Linear warmup, then a cosine decay from base_lr down to min_lr, which it keeps after total_steps:

        s < warmup_steps:   lr = base_lr · (s + 1) / warmup_steps
        otherwise:          lr = min_lr + (base_lr − min_lr) · ½ (1 + cos(π · min(1, (s − warmup) / (total − warmup))))

    where s is the number of step() calls so far (s = 0 is the lr of the first update)."""

    def __init__(self, optimizer, total_steps, warmup_steps=0, min_lr=0.0):
        if not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"CosineWithWarmup: total_steps must be an int ≥ 1, got {total_steps!r}")
        if not isinstance(warmup_steps, int) or not 0 <= warmup_steps <= total_steps:
            raise ValueError(f"CosineWithWarmup: warmup_steps must be an int in [0, total_steps={total_steps}], "
                             f"got {warmup_steps!r}")
        self.total_steps, self.warmup_steps, self.min_lr = total_steps, warmup_steps, float(min_lr)
        super().__init__(optimizer)

    def get_lr(self):
        s = self.steps
        if s < self.warmup_steps:
            return self.base_lr * (s + 1) / self.warmup_steps
        decay_steps = self.total_steps - self.warmup_steps
        progress = min(1.0, (s - self.warmup_steps) / decay_steps) if decay_steps > 0 else 1.0
        return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


# ---------------------------------------------------------------------- Keras-style schedules (learning_rate=...)

class LearningRateSchedule:
    """A learning rate as a function of the optimizer's step number (0 for the first step), given as an
    optimizer's learning_rate (Keras' keras.optimizers.schedules)."""

    def __call__(self, step):
        raise NotImplementedError

    def get_config(self):
        return dict(self.config)

    def to_config(self):
        return {"class_name": type(self).__name__, "config": self.get_config()}


class CosineDecay(LearningRateSchedule):
    """Keras 3's CosineDecay, warm-up included. Without warmup_target: a cosine from initial_learning_rate down to
    alpha · initial_learning_rate over decay_steps, kept after. With warmup_target: first a linear ramp from
    initial_learning_rate to warmup_target over warmup_steps, then the cosine from warmup_target:

        s < warmup_steps:  lr = initial + (target − initial) · s / warmup_steps
        otherwise:         lr = target · ((1 − alpha) · ½ (1 + cos(π · min(s − warmup_steps, decay_steps) / decay_steps)) + alpha)
    """

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0, warmup_target=None, warmup_steps=0):
        _check_non_negative("CosineDecay", "initial_learning_rate", initial_learning_rate)
        if not isinstance(decay_steps, int) or decay_steps < 1:
            raise ValueError(f"CosineDecay: decay_steps must be an int ≥ 1, got {decay_steps!r}")
        if not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"CosineDecay: warmup_steps must be an int ≥ 0, got {warmup_steps!r}")
        if warmup_target is not None:
            _check_non_negative("CosineDecay", "warmup_target", warmup_target)
        self.config = dict(initial_learning_rate=initial_learning_rate, decay_steps=decay_steps, alpha=alpha,
                           warmup_target=warmup_target, warmup_steps=warmup_steps)

    def __call__(self, step):
        c = self.config
        initial, target = c["initial_learning_rate"], c["warmup_target"]
        if target is None:
            target, warmup = initial, 0
        else:
            warmup = c["warmup_steps"]
        if step < warmup:
            return initial + (target - initial) * step / warmup
        progress = min(step - warmup, c["decay_steps"]) / c["decay_steps"]
        return target * ((1 - c["alpha"]) * 0.5 * (1 + math.cos(math.pi * progress)) + c["alpha"])


_SCHEDULES = {"CosineDecay": CosineDecay}


def schedule_from_config(config):
    """The schedule that to_config() described ({'class_name': ..., 'config': {...}})."""
    if config.get("class_name") not in _SCHEDULES:
        raise ValueError(f"unknown learning-rate schedule {config.get('class_name')!r}; "
                         f"known: {sorted(_SCHEDULES)}")
    return _SCHEDULES[config["class_name"]](**config["config"])

"""Keras-style optimizer specs for `model.compile(optimizer=...)`.

Keras creates an optimizer before the model's weights exist (`Adam(learning_rate=1e-3)`); tinycnn.optim's
optimizers take the parameters at construction, as PyTorch's do. These small specs bridge the two: compile
calls `spec.build(model.parameters())`.
"""


class Adam:
    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7, weight_decay=0.0):
        self.config = dict(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                           weight_decay=weight_decay)

    def build(self, params):
        from . import optim
        c = self.config
        return optim.Adam(params, lr=c["learning_rate"], betas=(c["beta_1"], c["beta_2"]), eps=c["epsilon"],
                          weight_decay=c["weight_decay"])


class AdamW(Adam):
    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7, weight_decay=1e-2):
        super().__init__(learning_rate, beta_1, beta_2, epsilon, weight_decay)

    def build(self, params):
        from . import optim
        c = self.config
        return optim.AdamW(params, lr=c["learning_rate"], betas=(c["beta_1"], c["beta_2"]), eps=c["epsilon"],
                           weight_decay=c["weight_decay"])


class SGD:
    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, weight_decay=0.0):
        self.config = dict(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov,
                           weight_decay=weight_decay)

    def build(self, params):
        from . import optim
        c = self.config
        return optim.SGD(params, lr=c["learning_rate"], momentum=c["momentum"], nesterov=c["nesterov"],
                         weight_decay=c["weight_decay"])


_NAMES = {"adam": Adam, "adamw": AdamW, "sgd": SGD}


def get(spec):
    """A spec from a name ('adam'), a spec object, or a {'name': ..., 'config': {...}} dict."""
    if isinstance(spec, str):
        if spec.lower() not in _NAMES:
            raise ValueError(f"unknown optimizer {spec!r}; choose one of {sorted(_NAMES)}")
        return _NAMES[spec.lower()]()
    if isinstance(spec, dict):
        return _NAMES[spec["name"]](**spec["config"])
    if hasattr(spec, "build"):
        return spec
    raise TypeError("optimizer must be a name, a tinycnn.optimizers spec, or a tinycnn.optim optimizer")


def to_config(spec):
    name = {v: k for k, v in _NAMES.items()}[type(spec)]
    return {"name": name, "config": dict(spec.config)}

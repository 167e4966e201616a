"""Keras' module names over tinycnn's, so that code written for tf.keras changes only in its imports:

    from tensorflow.keras.models import Sequential, Model, load_model   ->  from tinycnn.keras.models import ...
    from tensorflow.keras.layers import Conv2D, Input, concatenate       ->  from tinycnn.keras.layers import ...
    from tensorflow.keras.callbacks import ModelCheckpoint               ->  from tinycnn.keras.callbacks import ...
    from tensorflow.keras.applications import MobileNetV2                ->  from tinycnn.keras.applications import ...
    from tensorflow.keras.utils import to_categorical                    ->  from tinycnn.keras.utils import ...
    from tensorflow import keras                                         ->  from tinycnn import keras

Each name below is the tinycnn module itself (registered in sys.modules under tinycnn.keras.<name>), not a
copy: tinycnn.keras.layers.Conv2D is tinycnn.layers.Conv2D. docs/tutorial.md uses these imports.
"""
import sys

from . import applications, callbacks, layers, losses, metrics, models, optimizers, utils
from .applications import mobilenet_v2
from .functional_model import Input  # noqa: F401
from .model import Model  # noqa: F401
from .models import Sequential  # noqa: F401
from .saving import load_model  # noqa: F401

_ALIASES = {"applications": applications, "applications.mobilenet_v2": mobilenet_v2, "callbacks": callbacks,
            "layers": layers, "losses": losses, "metrics": metrics, "models": models, "optimizers": optimizers,
            "utils": utils}
for _name, _module in _ALIASES.items():
    sys.modules[f"{__name__}.{_name}"] = _module

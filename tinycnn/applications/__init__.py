"""Ready-made architectures, as keras.applications: MobileNetV2."""
from .mobilenet_v2 import MobileNetV2  # noqa: F401

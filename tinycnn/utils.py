"""keras.utils' helpers that the tutorial uses: to_categorical, load_img, img_to_array (and, as Keras 3 has it
there too, image_dataset_from_directory).

    to_categorical([0, 2, 1], 3)                    # one-hot rows, float32 (3, 3); labels of any shape (N, H, W) -> (N, H, W, 3)
    img = load_img("cat.jpg", color_mode="grayscale", target_size=(100, 100))   # a Pillow image (Keras' (height, width))
    x = img_to_array(img)                           # float32 (100, 100, 1), pixels 0..255 as Keras gives them
"""
import numpy as np

from .data.directory import image_dataset_from_directory  # noqa: F401  (keras.utils.image_dataset_from_directory)
from .data.images import open_image, resize_image, to_gray_or_rgb

_COLOR_MODES = {"grayscale": True, "rgb": False}


def to_categorical(y, num_classes=None, dtype="float32"):
    """Integer labels -> one-hot along a new last axis; a trailing axis of 1 is dropped first, as in Keras."""
    labels = np.asarray(y)
    if labels.dtype.kind == "f" and not np.all(labels == np.round(labels)):
        raise ValueError("to_categorical: labels must be integers (class indices)")
    labels = labels.astype(np.int64)
    if labels.ndim > 1 and labels.shape[-1] == 1:
        labels = labels[..., 0]
    if labels.size and labels.min() < 0:
        raise ValueError(f"to_categorical: labels must be ≥ 0, got {labels.min()}")
    num_classes = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    if labels.size and labels.max() >= num_classes:
        raise ValueError(f"to_categorical: label {labels.max()} does not fit num_classes={num_classes}")
    return np.eye(num_classes, dtype=dtype)[labels]


def load_img(path, color_mode="rgb", target_size=None, interpolation="bilinear"):
    """The image file at `path` as a Pillow image in `color_mode` ("grayscale" or "rgb"), resized to
    target_size=(height, width) if given (stretched, as Keras does)."""
    if color_mode not in _COLOR_MODES:
        raise ValueError(f"load_img: color_mode must be 'grayscale' or 'rgb', got {color_mode!r}")
    img = to_gray_or_rgb(open_image(path), _COLOR_MODES[color_mode])
    if target_size is None:
        return img
    height, width = target_size
    from PIL import Image
    resample = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}.get(interpolation)
    if resample is None:
        raise ValueError(f"load_img: interpolation must be 'nearest', 'bilinear' or 'bicubic', got {interpolation!r}")
    return resize_image(img, (height, width), "stretch", resample)


def img_to_array(img, dtype="float32"):
    """A Pillow image -> an (H, W, C) array (C = 1 for grayscale), values 0..255 as Keras gives them."""
    array = np.asarray(img, dtype=dtype)
    return array[:, :, None] if array.ndim == 2 else array

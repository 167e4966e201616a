"""tinycnn.keras (Keras' module names over tinycnn's: tinycnn/keras.py) and tinycnn.utils (to_categorical,
load_img, img_to_array)."""
import numpy as np
import pytest
from PIL import Image

import tinycnn
from tinycnn.keras.utils import img_to_array, load_img, to_categorical


def test_keras_module_names_are_tinycnns_modules():
    from tinycnn.keras.applications import MobileNetV2
    from tinycnn.keras.applications.mobilenet_v2 import MobileNetV2 as same
    from tinycnn.keras.callbacks import EarlyStopping, ModelCheckpoint
    from tinycnn.keras.layers import Conv2D, Input, concatenate
    from tinycnn.keras.models import Model, Sequential, load_model
    assert (Conv2D, Input, concatenate) == (tinycnn.layers.Conv2D, tinycnn.layers.Input, tinycnn.layers.concatenate)
    assert (Sequential, Model, load_model) == (tinycnn.Sequential, tinycnn.Model, tinycnn.load_model)
    assert (ModelCheckpoint, EarlyStopping) == (tinycnn.callbacks.ModelCheckpoint, tinycnn.callbacks.EarlyStopping)
    assert MobileNetV2 is same is tinycnn.applications.MobileNetV2
    from tinycnn import keras
    assert keras.utils.to_categorical is to_categorical and keras.Sequential is tinycnn.Sequential


def test_to_categorical_as_keras():
    np.testing.assert_array_equal(to_categorical([0, 2, 1]), np.eye(3)[[0, 2, 1]])
    assert to_categorical(np.array([[1], [0]]), 3).shape == (2, 3)           # a trailing axis of 1 is dropped
    masks = np.zeros((2, 4, 5), np.uint8)
    masks[0, 1, 2] = 1
    one_hot = to_categorical(masks, 2)
    assert one_hot.shape == (2, 4, 5, 2) and one_hot.dtype == np.float32
    assert one_hot[0, 1, 2, 1] == 1.0 and one_hot[..., 0].sum() == 2 * 4 * 5 - 1
    with pytest.raises(ValueError, match="does not fit num_classes=2"):
        to_categorical([0, 2], 2)
    with pytest.raises(ValueError, match="integers"):
        to_categorical([0.5])


def test_load_img_and_img_to_array(tmp_path):
    pixels = np.zeros((10, 20, 3), np.uint8)
    pixels[:, 10:] = (200, 100, 50)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    img = load_img(tmp_path / "a.png", color_mode="grayscale", target_size=(5, 8))   # (height, width)
    array = img_to_array(img)
    assert array.shape == (5, 8, 1) and array.dtype == np.float32
    assert array[0, 0, 0] == 0 and array[0, -1, 0] == pytest.approx(0.299 * 200 + 0.587 * 100 + 0.114 * 50, abs=1)
    assert img_to_array(load_img(tmp_path / "a.png")).shape == (10, 20, 3)
    with pytest.raises(ValueError, match="color_mode"):
        load_img(tmp_path / "a.png", color_mode="cmyk")

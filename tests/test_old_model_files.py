"""Model files written by tinycnn before the trainer split and the Keras-order Flatten (commit 4de136b, by
tests/old_model_files/make_old.py run on that commit) still load, and predict exactly what they predicted
then: a Sequential and a functional Model (saved under the class name 'Model'), each with a Flatten before
a Dense (the old (C, H, W) order is kept for them)."""
import os

import numpy as np
import pytest

import tinycnn

HERE = os.path.join(os.path.dirname(__file__), "old_model_files")


@pytest.mark.parametrize("kind", ["sequential", "functional"])
def test_an_old_file_loads_and_predicts_as_before(kind):
    expected = np.load(os.path.join(HERE, "old_predictions.npz"))
    model = tinycnn.load_model(os.path.join(HERE, f"old_{kind}.tcnn"))
    assert isinstance(model, tinycnn.Model)
    flatten = [layer for layer in model.layers if isinstance(layer, tinycnn.layers.Flatten)]
    assert [layer.keras_order for layer in flatten] == [False]
    np.testing.assert_allclose(model.predict(expected["x"]), expected[kind], rtol=1e-6, atol=1e-7)

"""The benchmark's tinycnn twins (benchmarks/models.py) build and train: one step of each on a small batch,
then an inference pass, so that a change to the engine or the twins cannot break `python -m benchmarks`
unnoticed."""
import numpy as np
import pytest

import tinycnn
from benchmarks.models import MODELS, build_tinycnn, make_batch


@pytest.mark.parametrize("name", MODELS)
def test_twin_trains_and_predicts(name):
    tinycnn.manual_seed(0)
    model, loss_fn = build_tinycnn(name)
    x, y = make_batch(name, 2)
    model.train()
    loss = loss_fn(model(tinycnn.Tensor(x)), y)
    loss.backward()
    assert np.isfinite(loss.item())
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and np.isfinite(g).all() for g in grads) and any(np.abs(g).sum() > 0 for g in grads)
    model.eval()
    with tinycnn.no_grad():
        out = model(tinycnn.Tensor(x)).numpy()
    assert out.shape[0] == 2 and np.isfinite(out).all()


def test_the_twins_are_the_task_models():
    from tinycnn.tasks.plates_models import PlateBoxRegressor, PlateSegmenter
    mobilenet, fcn = build_tinycnn("mobilenet")[0], build_tinycnn("fcn")[0]
    for model, name in ((mobilenet, "mobilenet"), (fcn, "fcn")):
        model(tinycnn.Tensor(make_batch(name, 1)[0]))  # builds the weights
    assert type(mobilenet) is PlateBoxRegressor and mobilenet.head is None
    assert type(fcn) is PlateSegmenter and fcn.depth == 2
    assert mobilenet.count_params() == 126_340 and fcn.count_params() == 117_378  # the benchmark's networks


def test_the_new_twins_are_the_task_models():
    """strong and detector: the presets' own networks and inputs, with the counts the peers' twins have
    (PyTorch and Keras: 389,153 and 161,733 trainable parameters; the benchmark's table flags a difference)."""
    from benchmarks import models
    from tinycnn.tasks.catdog import PRESETS, strong_model
    from tinycnn.tasks.plates_detect import RECIPE, PlateCenterNet, stages
    preset = PRESETS["strong"]
    assert models.INPUT["strong"] == (1 if preset["grayscale"] else 3, preset["img_size"], preset["img_size"])
    assert models.BATCH["strong"] == preset["batch_size"]
    assert models.DETECTOR_STAGES == stages(RECIPE["expansion"])
    assert (models.DETECTOR_STEM, models.DETECTOR_NECK) == (RECIPE["stem"], RECIPE["neck"])
    strong, detector = build_tinycnn("strong")[0], build_tinycnn("detector")[0]
    outputs = {name: model(tinycnn.Tensor(make_batch(name, 1)[0])).shape
               for model, name in ((strong, "strong"), (detector, "detector"))}
    reference = strong_model(96, 3, 2)
    reference(tinycnn.Tensor(make_batch("strong", 1)[0]))
    assert [type(layer) for layer in strong.layers] == [type(layer) for layer in reference.layers]
    assert type(detector) is PlateCenterNet
    assert detector.get_config() == {"width": 1.0, "neck": 64, "stem": 16, "expansion": 4,
                                     "head": RECIPE["head_layers"]}
    assert outputs == {"strong": (1, 1), "detector": (1, 5, 64, 64)}
    assert make_batch("detector", 2)[1].shape == (2, 5, 64, 64)
    assert strong.count_params() == 389_153 and detector.count_params() == 161_733

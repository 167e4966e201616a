"""The detector's target encoding and decoding (tasks/plates_detect.py): encoding boxes then decoding the
perfect output gives the boxes back, from the centre and from every cell that regresses a box; the heat-map's
shape; box-aware augmentation keeps every box."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import tinycnn
from tinycnn.tasks.detection_metrics import pairwise_iou
from tinycnn.tasks.plates_detect import (STRIDE, BoxAugmenter, boxes_at, CenterNetLoss, PlateCenterNet, decode,
                                         encode_batch, encode_targets, mirrored_back, pad_boxes,
                                         valid_boxes)


def perfect_output(boxes, grid):
    """The output a perfect network gives: the target heat-map as logits, the regression targets."""
    heat, regression, _ = encode_targets(boxes, grid)
    logits = np.log(np.clip(heat, 1e-6, 1 - 1e-6) / (1 - np.clip(heat, 1e-6, 1 - 1e-6)))
    logits[heat >= 1] = 20.0
    return np.concatenate([logits[None], regression])


@st.composite
def scenes(draw):
    """A canvas side and 0-6 boxes whose centres fall in different cells, 4-120 px wide."""
    size = draw(st.sampled_from([32, 64, 128, 256]))
    grid = size // STRIDE
    cells = draw(st.lists(st.tuples(st.integers(0, grid - 1), st.integers(0, grid - 1)), max_size=6, unique=True))
    boxes = []
    for row, col in cells:
        fx, fy = draw(st.floats(0.01, 0.99)), draw(st.floats(0.01, 0.99))
        w, h = draw(st.floats(4.0, 120.0)), draw(st.floats(2.0, 40.0))
        cx, cy = (col + fx) * STRIDE, (row + fy) * STRIDE
        boxes.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    return size, np.asarray(boxes, np.float32).reshape(-1, 4)


@settings(max_examples=80, deadline=None)
@given(scenes())
def test_encoding_then_decoding_gives_the_boxes_back(scene):
    size, boxes = scene
    found, scores = decode(perfect_output(boxes, size // STRIDE), threshold=0.99)
    assert len(found) == len(boxes)
    assert np.all(scores > 0.99)
    if len(boxes):
        # the same set of boxes, in any order
        ious = pairwise_iou(boxes, found)
        assert np.all(ious.max(axis=1) > 0.999)
        np.testing.assert_allclose(np.sort(found, axis=0), np.sort(boxes, axis=0), atol=1e-3)


@settings(max_examples=60, deadline=None)
@given(scenes())
def test_the_mirror_images_output_mapped_back_gives_the_boxes(scene):
    """--tta: the perfect output for the mirrored canvas, mapped back by mirrored_back, decodes to the original
    boxes, and so does its mean with the original's perfect output."""
    size, boxes = scene
    grid = size // STRIDE
    mirrored = boxes[:, [2, 1, 0, 3]] * np.float32([-1, 1, -1, 1]) + np.float32([size, 0, size, 0])
    back = mirrored_back(perfect_output(mirrored, grid)[None])[0]
    for output in (back, 0.5 * (back + perfect_output(boxes, grid))):
        found, _ = decode(output, threshold=0.99)
        assert len(found) == len(boxes)
        if len(boxes):
            np.testing.assert_allclose(np.sort(found, axis=0), np.sort(boxes, axis=0), atol=1e-3)


@settings(max_examples=80, deadline=None)
@given(scenes())
def test_every_cell_that_regresses_gives_its_plates_box(scene):
    """Dense regression: each weighted cell decodes to one of the boxes; each plate's weights sum to 1,
    largest at its centre cell."""
    size, boxes = scene
    grid = size // STRIDE
    heat, regression, weights = encode_targets(boxes, grid)
    output = np.concatenate([heat[None], regression])
    rows, cols = np.nonzero(weights)
    assert np.isclose(weights.sum(), len(boxes), atol=1e-4)
    if not len(boxes):
        return
    ious = pairwise_iou(boxes_at(output, rows, cols), boxes)
    assert np.all(ious.max(axis=1) > 0.999)
    owner = ious.argmax(axis=1)
    for k, (x0, y0, x1, y1) in enumerate(boxes / STRIDE):
        mine = owner == k
        assert np.isclose(weights[rows[mine], cols[mine]].sum(), 1.0, atol=1e-4)
        centre = (min(int((y0 + y1) / 2), grid - 1), min(int((x0 + x1) / 2), grid - 1))
        assert weights[centre] == weights[rows[mine], cols[mine]].max()


def test_heat_map_is_one_at_the_centre_and_falls_off():
    heat, regression, weights = encode_targets(np.array([[20, 30, 60, 42]], np.float32), 32)
    row, col = int(36 / 4), int(40 / 4)
    assert heat[row, col] == 1.0 and np.isclose(weights.sum(), 1.0) and weights[row, col] == weights.max()
    # a 10-cell-wide plate regresses from its neighbours along x too, with the box seen from there
    assert 0 < weights[row, col + 1] < weights[row, col]
    np.testing.assert_allclose(regression[:, row, col + 1], [np.log(10), np.log(3), -1.0, 0.0], atol=1e-6)
    assert heat.max() == 1.0 and 0 < heat[row, col + 1] < 1 and heat[row, col + 1] > heat[row + 1, col]
    np.testing.assert_allclose(regression[:, row, col], [np.log(10), np.log(3), 0.0, 0.0], atol=1e-6)


def test_padding_rows_are_not_boxes():
    padded = pad_boxes([np.zeros((0, 4)), np.array([[0.1, 0.1, 0.2, 0.2]])])
    assert padded.shape == (2, 1, 4) and len(valid_boxes(padded[0])) == 0 and len(valid_boxes(padded[1])) == 1
    heat, _, mask = encode_batch(padded, 32)
    assert heat[0].max() == 0 and mask[0].sum() == 0 and np.isclose(mask[1, 0].sum(), 1)


def test_augmentation_keeps_every_box():
    rng = np.random.default_rng(0)
    x = rng.random((3, 3, 64, 64)).astype(np.float32)
    y = pad_boxes([np.array([[0.1, 0.1, 0.3, 0.2], [0.6, 0.6, 0.9, 0.7], [0.4, 0.1, 0.5, 0.15]]),
                   np.array([[0.2, 0.5, 0.4, 0.6]]), np.zeros((0, 4))])
    augment = BoxAugmenter(seed=1)
    for _ in range(5):
        xb, yb = augment(x, y)
        assert xb.shape == x.shape
        assert [len(valid_boxes(b)) for b in yb] == [3, 1, 0]
        assert np.all(yb[yb >= 0] <= 1.0)


def test_the_network_shape_and_a_loss_that_falls():
    tinycnn.manual_seed(0)
    model = PlateCenterNet(width=0.35, neck=16)
    x = np.random.default_rng(0).random((4, 3, 32, 32)).astype(np.float32)
    y = pad_boxes([np.array([[0.2, 0.3, 0.6, 0.45]])] * 4)
    model.compile(loss=CenterNetLoss(), optimizer=tinycnn.optimizers.Adam(learning_rate=1e-2))
    assert model.predict(x).shape == (4, 5, 8, 8)
    history = model.fit(x, y, batch_size=4, epochs=15, verbose=0).history["loss"]
    assert history[-1] < 0.5 * history[0]

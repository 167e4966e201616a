"""Box and mask geometry: metrics against hand-computed cases, letterbox round trips, augmentation that keeps
the box on the plate (the moved box must equal the bounding box of the moved mask)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinycnn.tasks.box_ops import (
    augment_sample, box_iou, boxes_from_letterbox, boxes_to_letterbox, centre_error, clip_boxes,
    denormalise_boxes, fill_mask_from_boxes, jitter_colours, letterbox, letterbox_mask, mask_dice, mask_iou,
    mask_to_box, normalise_boxes,
)

FEW = settings(max_examples=25, deadline=None, derandomize=True)  # the same examples on every run


# ------------------------------------------------------------------------------------------------ metrics

def test_box_iou_hand_computed_cases_vectorised():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], np.float32)
    b = np.array([[5, 5, 15, 15], [0, 0, 10, 10], [20, 20, 30, 30], [10, 0, 20, 10], [2, 2, 4, 4]], np.float32)
    # overlap 25 of union 175; identical; disjoint; touching edges only; 4 inside 100
    np.testing.assert_allclose(box_iou(a, b), [25 / 175, 1.0, 0.0, 0.0, 4 / 100])
    assert box_iou(a[0], b[0]) == pytest.approx(1 / 7)
    assert box_iou([3, 3, 3, 3], [3, 3, 3, 3]) == 0.0  # no area, no overlap


def test_box_iou_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        box_iou(np.zeros((2, 4)), np.zeros((3, 4)))


def test_centre_error_is_the_distance_between_centres():
    np.testing.assert_allclose(centre_error([[0, 0, 2, 2], [1, 1, 3, 3]], [[3, 4, 5, 6], [1, 1, 3, 3]]), [5.0, 0.0])


def test_mask_dice_and_iou_hand_computed():
    true = np.zeros((4, 5), np.uint8)
    true[1, 0:3] = 1
    true[2, 0:3] = 1          # 6 pixels
    pred = np.zeros((4, 5), np.float32)
    pred[1, 1:4] = 0.9        # 3 pixels, 2 of them on the plate
    pred[2, 2] = 0.7          # 1 more on the plate
    pred[3, 4] = 0.4          # below the 0.5 threshold: not plate
    assert mask_dice(pred, true) == pytest.approx(2 * 3 / (4 + 6))
    assert mask_iou(pred, true) == pytest.approx(3 / 7)


def test_mask_metrics_empty_masks_and_batches():
    empty = np.zeros((3, 3), bool)
    full = np.ones((3, 3), bool)
    assert mask_dice(empty, empty) == 1.0 and mask_iou(empty, empty) == 1.0
    assert mask_dice(full, empty) == 0.0 and mask_iou(empty, full) == 0.0
    batch = np.stack([full, empty])
    np.testing.assert_array_equal(mask_dice(batch, np.stack([full, full])), [1.0, 0.0])


# ------------------------------------------------------------------------------------------ boxes and masks

def test_fill_mask_marks_pixels_whose_centre_is_inside():
    mask = fill_mask_from_boxes([[1.2, 2.0, 4.6, 3.4]], height=6, width=8)
    expected = np.zeros((6, 8), np.uint8)
    expected[2, 1:5] = 1      # centres x 1.5 .. 4.5 and y 2.5 lie inside; x 0.5 and 5.5, y 1.5 and 3.5 do not
    np.testing.assert_array_equal(mask, expected)


def test_fill_mask_thin_box_keeps_a_pixel_and_outside_box_marks_nothing():
    thin = fill_mask_from_boxes([[2.1, 1.1, 2.3, 1.3]], height=4, width=4)
    assert thin.sum() == 1 and thin[1, 2] == 1
    assert fill_mask_from_boxes([[5, 5, 9, 9], [-4, 0, -1, 2]], height=4, width=4).sum() == 0


def test_mask_to_box_round_trip_and_empty_mask():
    boxes = np.array([[2, 1, 7, 4]], np.float32)
    np.testing.assert_array_equal(mask_to_box(fill_mask_from_boxes(boxes, 6, 9)), boxes[0])
    assert mask_to_box(np.zeros((3, 3), np.uint8)) is None


def test_clip_and_normalise_boxes():
    np.testing.assert_array_equal(clip_boxes([[-3, 2, 12, 30]], 10, 20), [[0, 2, 10, 20]])
    normal = normalise_boxes([[32, 12, 64, 24]], width=64, height=48)
    np.testing.assert_allclose(normal, [[0.5, 0.25, 1.0, 0.5]])
    np.testing.assert_allclose(denormalise_boxes(normal, 64, 48), [[32, 12, 64, 24]])


# ---------------------------------------------------------------------------------------------------- letterbox

def test_letterbox_shape_scale_pad_and_grey_border():
    image = np.full((40, 80, 3), 0.2, np.float32)
    canvas, scale, pad = letterbox(image, 32)
    assert canvas.shape == (32, 32, 3) and canvas.dtype == np.float32
    assert scale == pytest.approx(0.4) and pad == (0, 8)
    np.testing.assert_allclose(canvas[:8], 0.5)
    np.testing.assert_allclose(canvas[24:], 0.5)
    np.testing.assert_allclose(canvas[8:24], 0.2, atol=1e-6)


def _plate_image(height, width, box):
    """A black picture with a white plate filling `box`, and its mask."""
    mask = fill_mask_from_boxes([box], height, width)
    return np.repeat(mask[:, :, None].astype(np.float32), 3, axis=2), mask


@FEW
@given(height=st.integers(20, 90), width=st.integers(20, 90), size=st.sampled_from([32, 48, 64]),
       fractions=st.tuples(*[st.floats(0.0, 0.4)] * 2, *[st.floats(0.55, 1.0)] * 2))
def test_letterbox_maps_boxes_onto_the_moved_pixels_and_back(height, width, size, fractions):
    box = np.array([fractions[0] * width, fractions[1] * height, fractions[2] * width, fractions[3] * height],
                   np.float32)
    image, mask = _plate_image(height, width, box)
    canvas, scale, pad = letterbox(image, size)
    moved = boxes_to_letterbox(box, scale, pad)[0]
    tolerance = 1.0 + scale  # half a pixel of rounding in the source and in the canvas, plus bilinear blur
    np.testing.assert_allclose(mask_to_box(letterbox_mask(mask, size)), moved, atol=tolerance)
    np.testing.assert_allclose(mask_to_box(canvas[:, :, 0] > 0.5), moved, atol=tolerance)
    normal = boxes_to_letterbox(box, scale, pad, size=size)
    assert normal.min() >= 0 and normal.max() <= 1
    np.testing.assert_allclose(boxes_from_letterbox(normal, scale, pad, size=size)[0], box, atol=1e-3)
    np.testing.assert_allclose(boxes_from_letterbox(moved, scale, pad)[0], box, atol=1e-3)


# ------------------------------------------------------------------------------------------------- augmentation

GEOMETRIES = {
    "flip": dict(flip=True, scale_translate=None, max_rotation_deg=0),
    "scale_translate": dict(flip=False, scale_translate=(0.7, 1.3, 0.2), max_rotation_deg=0),
    "rotation": dict(flip=False, scale_translate=None, max_rotation_deg=8),
    "all": dict(flip=True, scale_translate=(0.8, 1.2, 0.15), max_rotation_deg=5),
    "stretch": dict(flip=False, scale_translate=None, max_rotation_deg=0, max_stretch=1.3),
    "all + stretch": dict(flip=True, scale_translate=(0.8, 1.2, 0.15), max_rotation_deg=5, max_stretch=1.3),
}


@FEW
@given(seed=st.integers(0, 10_000), kind=st.sampled_from(sorted(GEOMETRIES)),
       height=st.integers(40, 100), width=st.integers(40, 120),
       corner=st.tuples(st.floats(0.0, 0.7), st.floats(0.0, 0.7)),
       extent=st.tuples(st.floats(0.15, 0.3), st.floats(0.15, 0.3)))
def test_augmented_box_stays_on_the_plate(seed, kind, height, width, corner, extent):
    x0, y0 = corner[0] * width, corner[1] * height
    box = np.array([x0, y0, x0 + extent[0] * width, y0 + extent[1] * height], np.float32)
    image, mask = _plate_image(height, width, box)
    new_image, new_boxes, new_mask = augment_sample(image, box[None], mask, np.random.default_rng(seed),
                                                    colour_jitter=0, **GEOMETRIES[kind])
    assert new_boxes.shape == (1, 4) and new_mask.shape == (height, width) and new_image.shape == image.shape
    from_mask = mask_to_box(new_mask)
    assert from_mask is not None, "the plate left the picture"
    np.testing.assert_allclose(new_boxes[0], from_mask, atol=2.0)
    white = new_image[:, :, 0] > 0.75  # the pixels moved with the mask
    assert mask_iou(white, new_mask) > 0.7


def test_stretch_changes_the_aspect_within_its_range_and_keeps_the_area():
    box = np.array([[40.0, 45.0, 60.0, 55.0]], np.float32)  # 20 x 10, about the centre of a 100 x 100 picture
    image = np.zeros((100, 100, 3), np.float32)
    aspects = []
    for seed in range(40):
        _, moved, _ = augment_sample(image, box, None, np.random.default_rng(seed), flip=False, scale_translate=None,
                                     max_rotation_deg=0, colour_jitter=0, max_stretch=1.25)
        w, h = moved[0, 2] - moved[0, 0], moved[0, 3] - moved[0, 1]
        assert w * h == pytest.approx(200.0, rel=1e-4)
        aspects.append(w / h / 2.0)  # the stretch squared
    assert 1 / 1.25 ** 2 - 1e-4 <= min(aspects) < 0.9 and 1.1 < max(aspects) <= 1.25 ** 2 + 1e-4


def test_without_stretch_the_draws_are_those_of_before():
    """max_stretch 1 draws nothing more: scale, shift and angle from the generator in that order, as before the
    option, so a run without it gets the same pictures."""
    from tinycnn.tasks.box_ops import _affine, _random_geometry
    matrix = _random_geometry(60, 50, np.random.default_rng(5), False, (0.8, 1.2, 0.1), 4.0, max_stretch=1.0)
    rng = np.random.default_rng(5)
    scale, shift = rng.uniform(0.8, 1.2), tuple(rng.uniform(-0.1, 0.1, size=2) * (60, 50))
    expected = _affine(scale, rng.uniform(-4.0, 4.0), False, shift, centre=(30, 25))
    np.testing.assert_allclose(matrix, expected, rtol=1e-12)
    stretched = _random_geometry(60, 50, np.random.default_rng(5), False, (0.8, 1.2, 0.1), 4.0, max_stretch=1.3)
    assert not np.allclose(stretched, expected)


def test_flip_mirrors_image_boxes_and_mask_exactly():
    rng = np.random.default_rng(0)
    image = rng.random((6, 10, 3)).astype(np.float32)
    boxes = np.array([[1, 1, 3, 4], [6, 0, 10, 2]], np.float32)
    mask = fill_mask_from_boxes(boxes, 6, 10)
    flipped = []
    for seed in range(8):
        out_image, out_boxes, out_mask = augment_sample(image, boxes, mask, np.random.default_rng(seed),
                                                        colour_jitter=0, **GEOMETRIES["flip"])
        if np.array_equal(out_boxes, boxes):
            np.testing.assert_array_equal(out_image, image)
        else:
            flipped.append(seed)
            np.testing.assert_array_equal(out_boxes, [[7, 1, 9, 4], [0, 0, 4, 2]])
            np.testing.assert_allclose(out_image, image[:, ::-1], atol=1e-6)
            np.testing.assert_array_equal(out_mask, mask[:, ::-1])
    assert 0 < len(flipped) < 8


def test_a_plate_that_would_leave_the_picture_keeps_its_place():
    # the plate fills the picture: any zoom-in pushes a third of it out, below min_visible=0.9 -> geometry kept
    image = np.random.default_rng(1).random((20, 30, 3)).astype(np.float32)
    boxes = np.array([[0, 0, 30, 20]], np.float32)
    out_image, out_boxes, out_mask = augment_sample(
        image, boxes, None, np.random.default_rng(2), flip=False, scale_translate=(1.2, 1.3, 0.0),
        max_rotation_deg=0, colour_jitter=0, min_visible=0.9)
    np.testing.assert_array_equal(out_boxes, boxes)
    np.testing.assert_array_equal(out_image, image)
    assert out_mask is None


def test_partly_pushed_out_boxes_are_clipped_and_mostly_visible():
    image = np.zeros((50, 50, 3), np.float32)
    boxes = np.array([[0, 0, 12, 8]], np.float32)  # in a corner: big shifts push it out
    for seed in range(20):
        _, out, _ = augment_sample(image, boxes, None, np.random.default_rng(seed), flip=True,
                                   scale_translate=(0.9, 1.1, 0.4), max_rotation_deg=5, colour_jitter=0)
        assert out.min() >= 0 and out[0, 2] <= 50 and out[0, 3] <= 50
        assert (out[0, 2] - out[0, 0]) * (out[0, 3] - out[0, 1]) >= 0.5 * 0.81 * 96 - 1e-3


def test_augment_is_deterministic_and_colour_jitter_stays_in_range():
    image = np.random.default_rng(3).random((16, 24, 3)).astype(np.float32)
    boxes = np.array([[4, 4, 12, 9]], np.float32)
    first = augment_sample(image, boxes, None, np.random.default_rng(7), colour_jitter=0.4)
    second = augment_sample(image, boxes, None, np.random.default_rng(7), colour_jitter=0.4)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert first[0].dtype == np.float32 and 0 <= first[0].min() and first[0].max() <= 1
    assert not np.allclose(first[0], image)


def test_colour_jitter_matrix_equals_the_three_steps_one_after_another():
    image = np.random.default_rng(4).random((5, 7, 3)).astype(np.float32)
    brightness, contrast, saturation = np.random.default_rng(9).uniform(0.6, 1.4, size=3)
    step = image * brightness
    step = (step - step.mean()) * contrast + step.mean()
    grey = (step @ np.array([0.299, 0.587, 0.114]))[:, :, None]
    expected = np.clip(grey + (step - grey) * saturation, 0, 1)
    np.testing.assert_allclose(jitter_colours(image, np.random.default_rng(9), 0.4), expected, atol=1e-6)
    grey_image = image[:, :, :1]
    np.testing.assert_allclose(jitter_colours(grey_image, np.random.default_rng(9), 0.4),
                               np.clip((grey_image * brightness - grey_image.mean() * brightness) * contrast
                                       + grey_image.mean() * brightness, 0, 1), atol=1e-6)


def test_augment_rejects_a_mask_of_another_size():
    with pytest.raises(ValueError, match="mask shape"):
        augment_sample(np.zeros((8, 8, 3), np.float32), [[1, 1, 4, 4]], np.zeros((8, 9)), np.random.default_rng())

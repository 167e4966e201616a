"""Connected-component labelling: the Numba two-pass union-find kernel against the flood-fill reference
(and scipy.ndimage.label when scipy happens to be installed) on random masks."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinycnn.kernels.cpu import label as cpu
from tinycnn.kernels.reference import label as reference
from tinycnn.tasks.plates_pipeline import component_boxes


@st.composite
def masks(draw):
    height, width = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    density = draw(st.sampled_from([0.1, 0.3, 0.5, 0.7, 0.95]))
    seed = draw(st.integers(0, 2**31 - 1))
    return np.random.default_rng(seed).random((height, width)) < density


@settings(max_examples=60, deadline=None)
@given(masks(), st.sampled_from([4, 8]))
def test_labels_match_the_flood_fill(mask, connectivity):
    labels, count = cpu.connected_components(mask, connectivity)
    expected, expected_count = reference.connected_components(mask, connectivity)
    assert count == expected_count
    np.testing.assert_array_equal(labels, expected)
    boxes, sizes = cpu.component_stats(labels, count)
    ref_boxes, ref_sizes = reference.component_stats(expected, expected_count)
    np.testing.assert_array_equal(boxes, ref_boxes)
    np.testing.assert_array_equal(sizes, ref_sizes)


@settings(max_examples=30, deadline=None)
@given(masks(), st.sampled_from([4, 8]))
def test_regions_match_scipy(mask, connectivity):
    ndimage = pytest.importorskip("scipy.ndimage")
    structure = np.ones((3, 3), int) if connectivity == 8 else None
    expected, expected_count = ndimage.label(mask, structure=structure)
    labels, count = cpu.connected_components(mask, connectivity)
    assert count == expected_count
    # the same partition: a one-to-one map between the two labellings
    pairs = set(zip(labels[mask].tolist(), expected[mask].tolist()))
    assert len(pairs) == count == len({a for a, _ in pairs}) == len({b for _, b in pairs})


def test_diagonal_touch_is_one_region_with_8_and_two_with_4():
    mask = np.array([[1, 0], [0, 1]], bool)
    assert cpu.connected_components(mask, 8)[1] == 1
    assert cpu.connected_components(mask, 4)[1] == 2


def test_u_shape_merges_into_one_label_numbered_by_its_first_pixel():
    mask = np.array([[1, 0, 1, 0, 1],
                     [1, 0, 1, 0, 1],
                     [1, 1, 1, 0, 1]], bool)
    labels, count = cpu.connected_components(mask, 4)
    assert count == 2
    assert labels[0, 0] == labels[0, 2] == 1 and labels[0, 4] == 2


def test_component_boxes_largest_first():
    mask = np.zeros((10, 12), bool)
    mask[1:3, 1:3] = True         # 4 px
    mask[5:9, 4:10] = True        # 24 px
    boxes, sizes = component_boxes(mask)
    np.testing.assert_array_equal(sizes, [24, 4])
    np.testing.assert_array_equal(boxes, [[4, 5, 10, 9], [1, 1, 3, 3]])
    empty_boxes, empty_sizes = component_boxes(np.zeros((4, 4), bool))
    assert empty_boxes.shape == (0, 4) and empty_sizes.shape == (0,)


def test_bad_connectivity_and_shape_are_clear_errors():
    with pytest.raises(ValueError, match="connectivity"):
        cpu.connected_components(np.ones((3, 3), bool), 6)
    with pytest.raises(ValueError, match="2-D"):
        cpu.connected_components(np.ones((3, 3, 3), bool))

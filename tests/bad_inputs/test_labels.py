"""Targets checked against the loss before training on them: the first bad one named by index and value."""
import numpy as np
import pytest

from tinycnn.checks import (UserInputError, check_binary_targets, check_class_indices, check_finite_targets,
                            check_probability_targets)


def test_binary_targets_accept_labels_and_soft_labels():
    check_binary_targets(np.array([0, 1, 1, 0]))
    check_binary_targets(np.array([[0.0], [0.25], [1.0]], np.float32))


def test_a_label_of_2_for_binary_cross_entropy_names_the_first():
    with pytest.raises(UserInputError, match=r"binary_crossentropy: .*target \[3\] is 2 \(2 bad targets in all\)"):
        check_binary_targets(np.array([0, 1, 1, 2, 0, -1]))


def test_class_indices_in_range_whole_and_ignored_pixels():
    check_class_indices(np.array([0, 2, 1]), num_classes=3)
    check_class_indices(np.array([0.0, 2.0]), num_classes=3)
    check_class_indices(np.array([[0, -100], [1, 1]]), num_classes=2, ignore_index=-100)
    with pytest.raises(UserInputError, match=r"class indices 0\.\.2 .*target \[1\] is 3$"):
        check_class_indices(np.array([0, 3, 1]), num_classes=3)
    with pytest.raises(UserInputError, match=r"target \[0, 1\] is 1\.5"):
        check_class_indices(np.array([[1.0, 1.5]]), num_classes=3)
    with pytest.raises(UserInputError, match=r"target \[1, 0\] is -1"):  # a mask pixel: (row, column)
        check_class_indices(np.array([[0, 1], [-1, 0]]), num_classes=2)


def test_non_finite_and_non_numeric_targets():
    with pytest.raises(UserInputError, match=r"finite.*target \[1\] is nan"):
        check_finite_targets(np.array([0.5, np.nan]), loss="mse")
    with pytest.raises(UserInputError, match="dtype <U3"):
        check_probability_targets(np.array(["cat", "dog"]))
    with pytest.raises(ValueError):  # a UserInputError is a ValueError, as Keras raises
        check_probability_targets(np.array([[0.5, 1.5]]))

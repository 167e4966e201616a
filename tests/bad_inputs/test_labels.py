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


# ---------------------------------------------------------------------------------------- in the losses

def _tiny_model(outputs, activation, loss):
    import tinycnn
    from tinycnn import layers
    model = tinycnn.Sequential([layers.Dense(outputs, activation=activation, input_shape=(3,))])
    return model.compile(loss=loss, optimizer="sgd")


def test_fit_refuses_a_label_of_2_with_binary_cross_entropy_naming_it():
    model = _tiny_model(1, "sigmoid", "binary_crossentropy")
    x, y = np.zeros((6, 3), np.float32), np.array([0, 1, 1, 0, 2, 1], np.float32)
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(UserInputError, match=r"binary_crossentropy: targets must be 0 or 1.*target \[4\] is 2"):
        model.fit(x, y, batch_size=6, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(model.get_weights(), before):  # refused before any step
        np.testing.assert_array_equal(a, b)


def test_each_loss_checks_its_targets():
    from tinycnn import losses
    from tinycnn.tensor import Tensor
    pred2 = Tensor(np.full((2, 3), 1 / 3, np.float32))
    with pytest.raises(UserInputError, match=r"sparse_categorical_crossentropy: .*0\.\.2 .*target \[1\] is 3"):
        losses.SparseCategoricalCrossentropy()(pred2, np.array([0, 3]))
    losses.SparseCategoricalCrossentropy()(pred2, np.array([0, -100]))  # the ignored index passes
    with pytest.raises(UserInputError, match=r"categorical_crossentropy: .*target \[0, 2\] is 2\.0"):
        losses.CategoricalCrossentropy()(pred2, np.array([[0, 0, 2.0], [1, 0, 0]]))
    for loss in (losses.MeanSquaredError(), losses.MeanAbsoluteError(), losses.Huber()):
        with pytest.raises(UserInputError, match=rf"{loss.name}: targets must be finite.*target \[1, 0\] is inf"):
            loss(pred2, np.array([[0, 0, 0], [np.inf, 0, 0]], np.float32))
    assert np.isfinite(losses.BinaryCrossentropy(label_smoothing=0.1)(Tensor(np.full((2, 1), 0.5, np.float32)),
                                                                         np.array([0.0, 1.0])).item())

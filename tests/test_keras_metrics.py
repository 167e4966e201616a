"""Metrics and losses by Keras' names: 'accuracy' resolved from the loss and shapes (binary, sparse, one-hot,
per-pixel channels-last masks), top-k, precision / recall / AUC / MeanIoU with state across batches,
label smoothing and from_logits, Huber; values worked by hand or from their definitions, gradients by finite
differences."""
import numpy as np
import pytest

import tinycnn
from gradcheck import check_gradients
from tinycnn import Input, Model, Tensor, layers, losses, metrics


# ---------------------------------------------------------------------- accuracy, resolved

def test_accuracy_resolves_from_loss_then_shapes():
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    labels = np.array([0, 1, 1, 0])
    assert metrics.accuracy(labels, scores) == 0.5                      # sparse
    assert metrics.accuracy(np.eye(2)[labels], scores) == 0.5           # one-hot
    assert metrics.accuracy(labels[:, None], scores) == 0.5             # sparse (N, 1)
    assert metrics.accuracy(np.array([1, 0, 1]), np.array([[0.7], [0.6], [0.2]])) == pytest.approx(1 / 3)
    multi_label = np.array([[1, 0, 1], [0, 1, 1]])
    sigmoid = np.array([[0.3, 0.2, 0.9], [0.1, 0.9, 0.7]])
    _, acc = metrics.get("accuracy", loss=losses.get("binary_crossentropy"))
    assert acc(multi_label, sigmoid) == pytest.approx(5 / 6)            # Keras: binary_accuracy, elementwise
    _, acc = metrics.get("acc", loss=losses.get("categorical_crossentropy"))
    assert acc(multi_label, sigmoid) == 0.5                             # argmax against argmax


def test_accuracy_on_channels_last_one_hot_masks_in_fit_and_evaluate():
    """The issue's crash: categorical_crossentropy with metrics=["accuracy"] on one-hot (N, H, W, 2) masks."""
    tinycnn.manual_seed(0)
    inputs = Input((6, 6, 1))
    out = layers.Conv2D(2, 1, activation="softmax")(inputs)
    model = Model(inputs, out)
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    x = np.random.default_rng(0).random((4, 6, 6, 1)).astype(np.float32)
    masks = np.stack([x[..., 0] < 0.5, x[..., 0] >= 0.5], axis=-1).astype(np.float32)
    history = model.fit(x, masks, batch_size=2, epochs=1, verbose=0)
    assert 0.0 <= history.history["accuracy"][0] <= 1.0
    loss, accuracy = model.evaluate(x, masks, batch_size=4)
    predicted = model.predict(x).argmax(axis=-1)
    assert accuracy == pytest.approx(np.mean(predicted == masks.argmax(axis=-1)))
    sparse = Model(inputs, out)
    sparse.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    _, sparse_accuracy = sparse.evaluate(x, masks.argmax(axis=-1)[..., None], batch_size=4)
    assert sparse_accuracy == pytest.approx(accuracy)


def test_top_k():
    scores = np.array([[0.1, 0.5, 0.3, 0.1], [0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4]])
    labels = np.array([2, 3, 3])  # ranks 2, 4, 1
    assert metrics.sparse_top_k_categorical_accuracy(labels, scores, k=2) == pytest.approx(2 / 3)
    assert metrics.sparse_top_k_categorical_accuracy(labels, scores, k=1) == pytest.approx(1 / 3)
    assert metrics.top_k_categorical_accuracy(np.eye(4)[labels], scores, k=3) == pytest.approx(2 / 3)
    assert metrics.get("top_k_categorical_accuracy")[1] is metrics.top_k_categorical_accuracy


# ---------------------------------------------------------------------- metrics with state

def test_precision_recall_by_hand_and_across_batches():
    truth = np.array([1, 1, 0, 0, 1, 0])
    scores = np.array([0.9, 0.2, 0.7, 0.1, 0.8, 0.6])  # TP 2, FP 2, FN 1
    precision, recall = metrics.Precision(), metrics.Recall()
    precision.update_state(truth[:2], scores[:2])
    precision.update_state(truth[2:], scores[2:])
    recall.update_state(truth, scores)
    assert precision.result() == pytest.approx(0.5) and recall.result() == pytest.approx(2 / 3)
    precision.reset_state()
    assert np.isnan(precision.result())


def test_stateful_metrics_in_evaluate_are_not_batch_means():
    """Precision over 2 batches: batch means would give (1 + 0) / 2 = 0.5; the counts give 1 / 3."""
    model = tinycnn.Sequential([layers.Dense(1, activation="sigmoid", input_shape=(1,))])
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["precision", "recall", "auc"])
    model.layers[0].kernel.data[:] = 1.0  # the output is sigmoid(x): x > 0 predicts 1
    model.layers[0].bias.data[:] = 0.0
    x = np.array([[2.0], [-2.0], [1.0], [3.0]], np.float32)
    y = np.array([1, 0, 0, 0], np.float32)   # batch 1: TP 1; batch 2: FP 2
    result = model.evaluate(x, y, batch_size=2, return_dict=True)
    assert result["precision"] == pytest.approx(1 / 3)
    assert result["recall"] == pytest.approx(1.0)
    assert result["auc"] == pytest.approx(2 / 3, abs=1e-6)  # the positive (2.0) outranks 2 of 3 negatives
    history = model.fit(x, y, batch_size=2, epochs=1, verbose=0, shuffle=False)
    assert set(history.history) >= {"precision", "recall", "auc"}


def test_auc_by_hand_and_against_ranks():
    auc = metrics.AUC()
    auc.update_state(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    assert auc.result() == pytest.approx(0.75)
    rng = np.random.default_rng(0)
    truth = rng.random(500) < 0.4
    scores = np.clip(truth * 0.3 + rng.random(500) * 0.7, 0, 1)
    exact = np.mean(scores[truth][:, None] > scores[~truth][None, :])  # P(positive outranks negative)
    auc = metrics.AUC()
    auc.update_state(truth, scores)
    assert auc.result() == pytest.approx(exact, abs=0.01)  # 200 thresholds, as Keras


def test_mean_iou_by_hand_labels_scores_and_pixels():
    iou = metrics.MeanIoU(num_classes=2)
    iou.update_state(np.array([0, 1, 1, 0]), np.array([0, 1, 0, 1]))
    assert iou.result() == pytest.approx(1 / 3)  # each class: TP 1, FP 1, FN 1
    iou.reset_state()
    truth = np.array([[[0, 1], [1, 1]]])               # (N, H, W) labels
    scores = np.array([[[[0.9, 0.1], [0.2, 0.8]], [[0.6, 0.4], [0.3, 0.7]]]])  # (N, H, W, 2): 0 1 / 0 1
    iou.update_state(truth, scores)
    assert iou.result() == pytest.approx((1 / 2 + 2 / 3) / 2)
    iou.update_state(np.eye(2)[truth], scores)          # one-hot targets too, counts kept
    assert iou.result() == pytest.approx((2 / 4 + 4 / 6) / 2)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        metrics.MeanIoU(2).update_state(np.array([3]), np.array([0]))


def test_mean_iou_in_fit_on_channels_last_masks():
    tinycnn.manual_seed(1)
    inputs = Input((4, 4, 1))
    model = Model(inputs, layers.Conv2D(2, 1, activation="softmax")(inputs))
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=[metrics.MeanIoU(2)])
    x = np.random.default_rng(1).random((4, 4, 4, 1)).astype(np.float32)
    masks = np.eye(2, dtype=np.float32)[(x[..., 0] > 0.5).astype(int)]
    value = model.evaluate(x, masks, return_dict=True)["mean_io_u"]
    expected = metrics.MeanIoU(2)
    expected.update_state(masks.argmax(-1), model.predict(x))
    assert value == pytest.approx(expected.result())


def test_unknown_metric_names_the_choices():
    with pytest.raises(ValueError, match="unknown metric 'f1'.*precision"):
        metrics.get("f1")


# ---------------------------------------------------------------------- losses

def log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def test_label_smoothing_values():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((5, 3))
    y = np.eye(3)[rng.integers(0, 3, 5)]
    smooth = y * 0.8 + 0.2 / 3
    expected = -(smooth * log_softmax(logits)).sum(axis=1).mean()
    loss = losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.2)
    assert loss(Tensor(logits), y).item() == pytest.approx(expected)
    probabilities = layers.Activation("softmax")(Tensor(logits))  # the fused form through the kept logits
    assert losses.CategoricalCrossentropy(label_smoothing=0.2)(probabilities, y).item() == pytest.approx(expected)
    z, t = rng.standard_normal((4, 1)), rng.integers(0, 2, (4, 1)).astype(float)
    soft = t * 0.9 + 0.05
    p = 1 / (1 + np.exp(-z))
    expected = -(soft * np.log(p) + (1 - soft) * np.log(1 - p)).mean()
    assert losses.BinaryCrossentropy(from_logits=True, label_smoothing=0.1)(Tensor(z), t).item() == \
        pytest.approx(expected)


def test_label_smoothing_gradients_by_finite_differences():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((4, 3))
    y = np.eye(3)[rng.integers(0, 3, 4)]
    check_gradients(lambda z: losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.3)(z, y), [logits])
    maps = rng.standard_normal((2, 2, 3, 3))  # per-pixel, classes on axis 1 (NCHW inside)
    masks = np.eye(2)[rng.integers(0, 2, (2, 3, 3))].transpose(0, 3, 1, 2)
    check_gradients(lambda z: losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)(z, masks), [maps])
    t = rng.integers(0, 2, (5, 1)).astype(float)
    check_gradients(lambda z: losses.BinaryCrossentropy(from_logits=True, label_smoothing=0.2)(z, t),
                    [rng.standard_normal((5, 1))])
    check_gradients(lambda z: losses.BinaryCrossentropy(label_smoothing=0.2)(z, t), [rng.uniform(0.1, 0.9, (5, 1))])


def test_huber_and_mae_values_and_gradients():
    pred = np.array([[0.2, -1.5], [3.0, 0.1]])
    # |e| ≤ 1: 0.5·e²; beyond: |e| − 0.5   ->  0.02, 1.0, 2.5, 0.005
    assert losses.get("huber")(Tensor(pred), np.zeros((2, 2))).item() == pytest.approx((0.02 + 1.0 + 2.5 + 0.005) / 4)
    assert losses.Huber(delta=2.0)(Tensor(pred), np.zeros((2, 2))).item() == \
        pytest.approx((0.02 + 1.125 + 2 * (3 - 1) + 0.005) / 4)
    assert losses.get("mae")(Tensor(pred), np.zeros(4)).item() == pytest.approx(4.8 / 4)
    target = np.array([[0.5, 0.3], [-0.2, 1.0]])
    off_kinks = np.array([[0.3, -1.1], [2.2, 0.4]])  # |e| away from 0 and δ, where the loss is smooth
    check_gradients(lambda z: losses.Huber()(z, target), [off_kinks])
    check_gradients(lambda z: losses.MeanAbsoluteError()(z, target), [off_kinks])


def test_losses_save_their_arguments(tmp_path):
    for loss in [losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1),
                 losses.BinaryCrossentropy(label_smoothing=0.2), losses.Huber(0.5)]:
        again = losses.from_config(losses.to_config(loss))
        assert type(again) is type(loss) and again.get_config() == loss.get_config()
    with pytest.raises(ValueError, match="label_smoothing"):
        losses.BinaryCrossentropy(label_smoothing=1.5)

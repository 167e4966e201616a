"""Detection metrics against cases worked out by hand."""
import math

import numpy as np
import pytest

from tinycnn.tasks.detection_metrics import (average_precision, best_f1_threshold, detection_metrics, draw_pr_curve,
                                             match_image, one_plate_tolerance, pairwise_iou, precision_recall)

A = [0, 0, 10, 10]
B = [20, 0, 30, 10]


def test_pairwise_iou_by_hand():
    ious = pairwise_iou([A, [5, 0, 15, 10]], [A, B])
    np.testing.assert_allclose(ious, [[1.0, 0.0], [50 / 150, 0.0]])


def test_greedy_matching_gives_each_truth_to_the_best_scored_prediction():
    # two predictions on A: the higher score (second) takes it, the other is a duplicate (false positive)
    hits, matched = match_image([[0, 0, 10, 10], [1, 0, 10, 10]], [0.4, 0.9], [A], 0.5)
    assert hits.tolist() == [False, True] and matched == 1
    # a prediction may not take a truth already taken: it falls back to its second-best overlap if >= t
    hits, _ = match_image([[0, 0, 10, 10], [0, 0, 10, 10]], [0.9, 0.8], [A, [0, 0, 10, 9]], 0.5)
    assert hits.tolist() == [True, True]


def test_ap_by_hand():
    # image 1: truths A, B; predictions: A (0.9, hit), far (0.8, miss), B (0.7, hit)
    # image 2: truth A; prediction A shifted by 6 px (IoU 4/16 = 0.25 -> miss at 0.5) with 0.6
    predictions = [(np.array([A, [50, 50, 60, 60], B], float), np.array([0.9, 0.8, 0.7])),
                   (np.array([[6, 0, 16, 10]], float), np.array([0.6]))]
    truths = [np.array([A, B], float), np.array([A], float)]
    precision, recall, _ = precision_recall(predictions, truths, 0.5)
    np.testing.assert_allclose(precision, [1, 1 / 2, 2 / 3, 2 / 4])
    np.testing.assert_allclose(recall, [1 / 3, 1 / 3, 2 / 3, 2 / 3])
    # envelope: 1 up to recall 1/3, 2/3 up to recall 2/3, 0 beyond: recall points 0..0.33 (34 of them) -> 1,
    # 0.34..0.66 (33) -> 2/3, 0.67..1 (34) -> 0
    expected = (34 * 1 + 33 * 2 / 3) / 101
    metrics = detection_metrics(predictions, truths, threshold=0.65)
    assert metrics["ap_50"] == pytest.approx(expected)
    assert metrics["recall_50"] == pytest.approx(2 / 3)
    # at score >= 0.65: three predictions, two hits of three plates
    assert (metrics["precision"], metrics["recall"]) == (pytest.approx(2 / 3), pytest.approx(2 / 3))
    assert metrics["f1"] == pytest.approx(2 / 3)
    # best IoU per plate at >= 0.65: A 1, B 1, image 2's A has no kept prediction -> 0
    assert metrics["mean_best_iou"] == pytest.approx(2 / 3)
    # at IoU 0.75 and above the same two hits stay exact matches, so every AP equals AP@0.5
    assert metrics["ap_50_95"] == pytest.approx(expected)


def test_ap_50_95_averages_the_thresholds():
    # one plate, one prediction of IoU 0.8 (box 10 x 8 inside 10 x 10): a hit at 0.5..0.8, a miss above
    metrics = detection_metrics([(np.array([[0, 0, 10, 8]], float), np.array([0.9]))], [np.array([A], float)], 0.5)
    assert metrics["ap_50"] == pytest.approx(1.0)
    assert metrics["ap_50_95"] == pytest.approx(7 / 10)   # thresholds 0.5, 0.55, ..., 0.8 hit; 0.85..0.95 miss
    assert metrics["mean_best_iou"] == pytest.approx(0.8)


def test_perfect_and_empty_predictions():
    truths = [np.array([A], float), np.array([B], float)]
    perfect = [(np.array([A], float), np.array([0.9])), (np.array([B], float), np.array([0.8]))]
    assert detection_metrics(perfect, truths, 0.5)["ap_50"] == pytest.approx(1.0)
    nothing = [(np.zeros((0, 4)), np.zeros(0)), (np.zeros((0, 4)), np.zeros(0))]
    metrics = detection_metrics(nothing, truths, 0.5)
    assert metrics["ap_50"] == 0.0 and metrics["recall"] == 0.0 and metrics["mean_best_iou"] == 0.0
    no_truth = detection_metrics(perfect, [np.zeros((0, 4)), np.zeros((0, 4))], 0.5)
    assert math.isnan(no_truth["ap_50"])


def test_average_precision_of_an_envelope():
    # precision rises after a miss: the envelope carries the later, higher precision back
    assert average_precision(np.array([0.5, 2 / 3]), np.array([0.5, 1.0])) == pytest.approx(2 / 3)


def test_pr_curve_image(tmp_path):
    metrics = detection_metrics([(np.array([A, B], float), np.array([0.9, 0.3]))], [np.array([A, B], float)], 0.5)
    path = draw_pr_curve(tmp_path / "pr.png", metrics["curve"], threshold=0.5)
    from PIL import Image
    image = np.asarray(Image.open(path))
    assert image.shape == (400, 480, 3) and (image != 255).any()


def test_best_f1_threshold_by_hand():
    # ranking: hit 0.9, miss 0.8, hit 0.7, miss 0.6 of 2 plates: F1 after each = 2/3, 1/2, 4/5, 2/3 -> 0.7
    curve = {"precision": np.array([1, 1 / 2, 2 / 3, 2 / 4]), "recall": np.array([1 / 2, 1 / 2, 1, 1]),
             "scores": np.array([0.9, 0.8, 0.7, 0.6])}
    assert best_f1_threshold(curve, default=0.3) == pytest.approx(0.7)
    nothing = {"precision": np.zeros(2), "recall": np.zeros(2), "scores": np.array([0.5, 0.4])}
    assert best_f1_threshold(nothing, default=0.3) == 0.3


def test_threshold_within_a_tolerance_of_the_best_f1_is_the_lowest():
    # 4 plates; ranking hit 0.9, hit 0.8, hit 0.7, miss 0.6, miss 0.5, hit 0.4:
    # F1 after each = 0.4, 0.667, 0.857, 0.75, 0.667, 0.8
    tp = np.cumsum([1, 1, 1, 0, 0, 1])
    curve = {"precision": tp / np.arange(1, 7), "recall": tp / 4, "scores": np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])}
    assert best_f1_threshold(curve, default=0.3) == pytest.approx(0.7)  # the best F1, 0.857
    assert one_plate_tolerance(4) == 0.25
    assert best_f1_threshold(curve, default=0.3, tolerance=one_plate_tolerance(4)) == pytest.approx(0.4)  # F1 0.8
    assert best_f1_threshold(curve, default=0.3, tolerance=0.05) == pytest.approx(0.7)  # 0.8 is 0.057 below
    assert one_plate_tolerance(0) == 0.0

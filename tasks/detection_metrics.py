"""Detection metrics for boxes with scores, COCO-style, and a precision-recall curve drawn with Pillow.

    metrics = detection_metrics(predictions, truths, threshold=0.3)
        predictions: one (boxes (K, 4), scores (K,)) pair per image; truths: one (G, 4) array per image;
        all boxes (xmin, ymin, xmax, ymax) in the same units (the photos' pixels).
    draw_pr_curve("runs/X/pr_curve.png", metrics_curve)

Matching (one image, one IoU threshold t): predictions in decreasing score order each take the not yet
matched ground-truth box they overlap most, if that IoU is >= t (a true positive); otherwise they are false
positives (COCO's greedy matching; a tie in score keeps the given order).

    AP@t            all images' predictions sorted by score; precision p_k and recall r_k after the k best;
                    the precision envelope p̂(r) = max_{r_k >= r} p_k read at the 101 recalls 0, 0.01, ..., 1
                    (0 past the highest recall reached), averaged — COCO's 101-point interpolation
    ap_50           AP@0.5;  ap_50_95 the mean of AP@0.5, 0.55, ..., 0.95
    recall_50       the share of ground-truth plates matched at IoU 0.5 by any prediction (the highest recall)
    mean_best_iou   for each ground-truth plate the IoU of the prediction (score >= threshold) that overlaps
                    it most (0 when there is none), averaged over the plates
    precision, recall, f1 at score >= threshold, IoU 0.5
With no ground-truth plate at all the APs and recalls are NaN (undefined), as COCO's -1.
"""
import numpy as np
from PIL import Image, ImageDraw

from .box_ops import box_areas

IOU_THRESHOLDS = np.round(np.arange(0.5, 0.96, 0.05), 2)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def pairwise_iou(a, b):
    """IoU of every box of a (K, 4) with every box of b (G, 4): (K, G) float64."""
    a = np.asarray(a, np.float64).reshape(-1, 4)[:, None, :]
    b = np.asarray(b, np.float64).reshape(-1, 4)[None, :, :]
    overlap_w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    overlap_h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    intersection = overlap_w * overlap_h
    union = box_areas(a) + box_areas(b) - intersection
    return np.where(union > 0, intersection / np.where(union > 0, union, 1.0), 0.0)


def match_image(boxes, scores, truth, iou_threshold):
    """Greedy matching in one image: (is_true_positive (K,) bool in the given order, matched truth count)."""
    scores = np.asarray(scores, np.float64).reshape(-1)
    ious = pairwise_iou(boxes, truth)
    taken = np.zeros(ious.shape[1], bool)
    hits = np.zeros(len(scores), bool)
    for k in np.argsort(-scores, kind="stable"):
        if ious.shape[1] == 0:
            break
        candidates = np.where(taken, -1.0, ious[k])
        best = int(np.argmax(candidates))
        if candidates[best] >= iou_threshold:
            taken[best], hits[k] = True, True
    return hits, int(taken.sum())


def precision_recall(predictions, truths, iou_threshold):
    """(precision (M,), recall (M,), scores (M,)) after each of the M predictions of all images, best first."""
    n_truth = sum(len(np.asarray(t).reshape(-1, 4)) for t in truths)
    all_hits, all_scores = [], []
    for (boxes, scores), truth in zip(predictions, truths):
        hits, _ = match_image(boxes, scores, truth, iou_threshold)
        all_hits.append(hits)
        all_scores.append(np.asarray(scores, np.float64).reshape(-1))
    hits = np.concatenate(all_hits) if all_hits else np.zeros(0, bool)
    scores = np.concatenate(all_scores) if all_scores else np.zeros(0)
    order = np.argsort(-scores, kind="stable")
    true_positives = np.cumsum(hits[order])
    precision = true_positives / np.arange(1, len(order) + 1)
    recall = true_positives / n_truth if n_truth else np.full(len(order), np.nan)
    return precision, recall, scores[order]


def average_precision(precision, recall):
    """COCO's 101-point interpolated AP of a precision-recall sequence (NaN when recall is undefined)."""
    if len(recall) and np.isnan(recall).any():
        return float("nan")
    if len(recall) == 0:
        return 0.0
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    index = np.searchsorted(recall, RECALL_POINTS, side="left")  # the first k with recall_k >= r
    values = np.where(index < len(recall), envelope[np.minimum(index, len(recall) - 1)], 0.0)
    return float(values.mean())


def ap_at(predictions, truths, iou_threshold):
    precision, recall, _ = precision_recall(predictions, truths, iou_threshold)
    return average_precision(precision, recall)


def mean_best_iou(predictions, truths, threshold):
    """Each ground-truth plate's IoU with its most overlapping prediction of score >= threshold, averaged."""
    best = []
    for (boxes, scores), truth in zip(predictions, truths):
        kept = np.asarray(boxes).reshape(-1, 4)[np.asarray(scores).reshape(-1) >= threshold]
        ious = pairwise_iou(truth, kept)
        best.extend(ious.max(axis=1) if ious.shape[1] else np.zeros(ious.shape[0]))
    return float(np.mean(best)) if best else float("nan")


def detection_metrics(predictions, truths, threshold):
    """The module's metrics as a dict, plus `curve` (precision, recall, scores at IoU 0.5) for the PR image."""
    if len(predictions) != len(truths):
        raise ValueError(f"{len(predictions)} images of predictions but {len(truths)} of ground truth")
    n_truth = sum(len(np.asarray(t).reshape(-1, 4)) for t in truths)
    precision, recall, scores = precision_recall(predictions, truths, 0.5)
    aps = [ap_at(predictions, truths, t) for t in IOU_THRESHOLDS]
    above = scores >= threshold
    true_positives = int(round(recall[above][-1] * n_truth)) if above.any() and n_truth else 0
    n_kept = int(above.sum())
    p_at = true_positives / n_kept if n_kept else (1.0 if n_truth == 0 else 0.0)
    r_at = true_positives / n_truth if n_truth else float("nan")
    f1 = 2 * p_at * r_at / (p_at + r_at) if n_truth and p_at + r_at > 0 else (0.0 if n_truth else float("nan"))
    return {"n_images": len(truths), "n_plates": n_truth, "n_predictions": n_kept, "threshold": float(threshold),
            "ap_50": aps[0], "ap_50_95": float(np.mean(aps)), "ap_75": aps[IOU_THRESHOLDS.tolist().index(0.75)],
            "recall_50": float(recall[-1]) if len(recall) and n_truth else (0.0 if n_truth else float("nan")),
            "mean_best_iou": mean_best_iou(predictions, truths, threshold),
            "precision": float(p_at), "recall": float(r_at), "f1": float(f1),
            "curve": {"precision": precision, "recall": recall, "scores": scores}}


def best_f1_threshold(curve, default, tolerance=0.0):
    """The score threshold whose detections have the best F1 at IoU 0.5 on the curve's data (the lowest score
    of that prefix of the ranking); with a tolerance, the lowest threshold whose F1 is within `tolerance` of
    the best (on a small val set F1 is flat over a wide range of thresholds: of those, the lowest keeps the
    most plates). `default` when nothing is ever matched."""
    precision, recall = np.asarray(curve["precision"]), np.asarray(curve["recall"])
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
    if len(f1) == 0 or f1.max() <= 0:
        return float(default)
    index = int(np.argmax(f1)) if tolerance <= 0 else int(np.nonzero(f1 >= f1.max() - tolerance)[0].max())
    return float(np.asarray(curve["scores"])[index])


def one_plate_tolerance(n_plates):
    """The F1 tolerance of the detector's threshold rule: one plate's worth of recall (1 / plates), under
    which a difference in F1 on the val set is one plate found or missed: noise, on a few dozen photos."""
    return 1.0 / n_plates if n_plates else 0.0


def draw_pr_curve(path, curve, title="precision-recall at IoU 0.5", threshold=None, size=(480, 400)):
    """Precision (y) against recall (x) as a PNG drawn with Pillow; the point at `threshold` marked."""
    width, height = size
    left, right, top, bottom = 50, width - 20, 30, height - 40
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle([left, top, right, bottom], outline="black")
    draw.text((left, 8), title, fill="black")
    for tick in (0.0, 0.5, 1.0):
        draw.text((left + tick * (right - left) - 8, bottom + 6), f"{tick:.1f}", fill="black")
        draw.text((12, bottom - tick * (bottom - top) - 6), f"{tick:.1f}", fill="black")
    draw.text(((left + right) // 2 - 15, bottom + 22), "recall", fill="black")
    precision, recall = np.asarray(curve["precision"]), np.asarray(curve["recall"])
    points = [(left + r * (right - left), bottom - p * (bottom - top))
              for p, r in zip(precision, recall) if np.isfinite(r)]
    if len(points) > 1:
        draw.line(points, fill=(31, 119, 180), width=2)
    if threshold is not None and len(points):
        above = np.flatnonzero(np.asarray(curve["scores"]) >= threshold)
        if above.size:
            x, y = points[min(above[-1], len(points) - 1)]
            draw.ellipse([x - 4, y - 4, x + 4, y + 4], outline=(214, 39, 40), width=2)
            draw.text((x + 6, y - 14), f"score >= {threshold:g}", fill=(214, 39, 40))
    image.save(path)
    return path

"""The evaluation sections of the run report (tinycnn/report.py), one function per kind of task.

Each loads the data the report is about, runs the model once, and adds its sections to the page with the
tasks' own prediction and metric functions (tinycnn.tasks.catdog, plates_box, plates_seg), so the report shows
what `python -m tinycnn.evaluate` measures. Each returns (one model input, a phrase naming it) for the
feature-map section.
"""
import html
from pathlib import Path

import numpy as np
from PIL import Image

from tinycnn import visualize
from tinycnn.checks import UserInputError
from tinycnn.data.folder import load_image_folder, load_train_val
from tinycnn.report import GRID_SIZE, _table, pr_panel, precision_recall

CATDOG_VAL_SPLIT, CATDOG_SEED = 0.1, 0   # tinycnn.train catdog's defaults for --val-split and --seed


# ------------------------------------------------------------------------------------------------ classifier

def classifier_sections(page, model, meta, data):
    """Confusion matrix, per-class precision/recall, PR curve (two classes), wrong and borderline images."""
    from . import catdog
    images, source = _classifier_data(meta, data)
    names = images.class_names
    outputs = model.predict(images.images, batch_size=32)
    predicted = catdog.predicted_classes(outputs)
    report = catdog.classification_report(images.labels, predicted, names)
    probabilities = _class_probabilities(outputs)
    confidence = probabilities[np.arange(len(predicted)), predicted]
    ranked = np.sort(probabilities, axis=1)
    margin = ranked[:, -1] - ranked[:, -2]   # 0 on the decision boundary

    per_class = [[n, m["precision"], m["recall"], m["f1"], m["support"]] for n, m in report["per_class"].items()]
    matrix = (page.figure("confusion", visualize.confusion_matrix_image(report["confusion_matrix"], names),
                          "Rows: the true class; columns: the predicted one. Shade and percentage: the share of "
                          "the row (so the diagonal reads as each class's recall).")
              + _table(["class", "precision", "recall", "F1", "images"], per_class))
    curve = ""
    if len(names) == 2:
        precision, recall, thresholds = precision_recall(probabilities[:, 1], images.labels == 1)
        curve = page.figure("precision_recall", visualize.plot_curves(pr_panel(precision, recall, thresholds,
                                                                               f"{names[1]} as positive")),
                            f"Precision and recall of <i>{html.escape(names[1])}</i> as the score threshold "
                            "moves; the star is the threshold 0.5 the model's predictions use.")
    page.section("classification", "Confusion matrix and per-class precision / recall",
                 f"<p>{len(images)} images: {html.escape(source)}. Accuracy <b>{report['accuracy']:.4f}</b>.</p>"
                 f'<div class="row"><div>{matrix}</div>{curve}</div>')

    wrong = np.flatnonzero(predicted != images.labels)
    wrong = wrong[np.argsort(-confidence[wrong], kind="stable")][:GRID_SIZE]
    captions = [f"true {names[images.labels[i]]}\npredicted {names[predicted[i]]} {confidence[i]:.2f}\n"
                f"{Path(images.paths[i]).name}" for i in wrong]
    page.section("wrong", "Most confidently wrong", page.figure(
        "wrong", visualize.image_grid([_original(images, i) for i in wrong], captions), "The wrong predictions "
        "the model was surest of, surest first, with the probability it gave its (wrong) class.")
        if len(wrong) else "<p>No image is classified wrongly.</p>")

    near = np.argsort(margin, kind="stable")[:GRID_SIZE]
    captions = [f"true {names[images.labels[i]]}\n" + " ".join(f"{n} {p:.2f}" for n, p in zip(names, probabilities[i]))
                + f"\n{Path(images.paths[i]).name}" for i in near]
    page.section("boundary", "Nearest the decision boundary", page.figure(
        "boundary", visualize.image_grid([_original(images, i) for i in near], captions),
        "The images whose two most likely classes are closest in probability."))
    shown = wrong[0] if len(wrong) else near[0]
    return images.images[shown], f"{Path(images.paths[shown]).name} (true {names[images.labels[shown]]})"


def _classifier_data(meta, data):
    """(ImageFolderData, a phrase saying what it is): --data, else the run's validation split, else the built-in
    test set (when the run's data folder is gone)."""
    settings = (meta["img_size"], meta["grayscale"], meta.get("resize", "stretch"))
    if data:
        images, source = load_image_folder(data, *settings), f"every image of {data}"
    elif meta.get("data") and Path(meta["data"]).is_dir():
        split, seed = meta.get("val_split", CATDOG_VAL_SPLIT), meta.get("seed", CATDOG_SEED)
        images = load_train_val(meta["data"], *settings, val_fraction=split, seed=seed)[1]
        source = f"the validation split of {meta['data']} (fraction {split}, seed {seed}, as tinycnn.train makes it)"
    else:
        from .catdog import BUILTIN_TEST
        from .synthetic_catdog import ensure_builtin_catdog
        root = ensure_builtin_catdog(**BUILTIN_TEST)
        images, source = load_image_folder(root, *settings), f"the built-in test set {root}"
    if images.class_names != meta["class_names"]:
        raise UserInputError(f"{data or meta.get('data')} has classes {images.class_names}, the model knows "
                         f"{meta['class_names']}")
    if not len(images):
        raise UserInputError(f"{data or meta.get('data')}: no image to show the model")
    return images, source


def _original(images, index):
    """The image file as a person sees it (the model saw it resized): its decoded input if the file is gone."""
    try:
        with Image.open(images.paths[index]) as picture:
            return picture.convert("RGB")
    except OSError:
        return images.images[index]


def _class_probabilities(outputs):
    """(N, classes) probabilities from a sigmoid (N, 1) or softmax (N, K) output."""
    return np.concatenate([1 - outputs, outputs], axis=1) if outputs.shape[1] == 1 else outputs


# ------------------------------------------------------------------------------------------------ plates

def plate_sections(page, model, meta, data, split):
    """Photos with predicted and true boxes (plates-box) or masks (plates-seg), worst IoU first, and a curve."""
    from .plates_pipeline import letterbox_records, read_source
    records = read_source(meta["source"], [split], data=data)[split]
    if not records:
        raise UserInputError(f"the {split} split of {data or 'the run data'} holds no annotated photo")
    photos = letterbox_records(records, meta["img_size"], keep_photo_masks=True)
    outputs = model.predict(photos.x, batch_size=16)
    where = f"{len(records)} photos of the {split} split of {data or _source_name(meta['source'])}"
    if meta["task"] == "plates-box":
        ious = _box_sections(page, photos, outputs, where)
    else:
        ious = _seg_sections(page, model, photos, outputs, where)
    worst = int(np.argmin(ious))
    return photos.x[worst], f"the worst photo, {Path(records[worst].path).name} (IoU {ious[worst]:.2f})"


def _source_name(source):
    return source.get("data") or "the built-in synthetic set"


def _box_sections(page, photos, outputs, where):
    from .box_ops import box_iou
    from .plates_box import box_metrics, photo_box
    from .plates_data import largest_box
    boxes = np.stack([photo_box(photo, output) for photo, output in zip(photos.photos, outputs)])
    truth = np.stack([largest_box(record.boxes) for record in photos.records])
    ious = box_iou(boxes, truth)
    metrics = box_metrics(boxes, truth)
    order = np.argsort(ious, kind="stable")[:GRID_SIZE]
    pictures = [visualize.crop_around(visualize.draw_boxes(_photo(photos.records[i]), boxes[i], photos.records[i].boxes),
                                      np.concatenate([boxes[i][None], photos.records[i].boxes])) for i in order]
    captions = [f"IoU {ious[i]:.2f}\n{Path(photos.records[i].path).name}" for i in order]
    thresholds = np.linspace(0, 1, 101)
    found = [float(np.mean(ious >= t)) for t in thresholds]
    panel = visualize.Panel("photos whose box reaches each IoU", [visualize.Series("share of photos", list(thresholds),
                            found)], xlabel="IoU threshold", ylabel="share of photos (= precision = recall)",
                            integer_x=False, limits=(0, 1, 0, 1.02))
    panel.mark = (0.5, metrics["share_iou_ge_0.5"], f"IoU 0.5: {metrics['share_iou_ge_0.5']:.0%} of photos")
    page.section("photos", "Photos, worst IoU first", f"<p>{html.escape(where)}.</p>" + _metrics_table(metrics)
                 + page.figure("photos", visualize.image_grid(pictures, captions, columns=4, tile=(280, 210)),
                                        "Predicted box red, true boxes green (the model is trained on the largest "
                                        "plate; IoU is against it), in the photo's own pixels; each photo cut to "
                                        "the part around its boxes."))
    page.section("precision-recall", "Precision and recall against the IoU threshold", page.figure(
        "iou_threshold", visualize.plot_curves(panel),
        "The box regressor predicts exactly one box per photo and gives it no score, so there is no score "
        "threshold to sweep and no precision-recall curve in the usual sense. At an IoU threshold t its box is a "
        "true positive when IoU >= t, else both a false positive and a missed plate; so precision and recall are "
        "the same number, the share of photos whose box reaches t, plotted here for every t."))
    return ious


def _seg_sections(page, model, photos, outputs, where):
    from .box_ops import mask_dice, mask_iou, mask_to_box
    from .plates_seg import evaluate_on, plate_mask
    masks = [plate_mask(photo, output) for photo, output in zip(photos.photos, outputs)]
    truths = [photo.mask > 0 for photo in photos.photos]
    ious = np.array([float(mask_iou(m, t)) for m, t in zip(masks, truths)])
    dices = [float(mask_dice(m, t)) for m, t in zip(masks, truths)]
    order = np.argsort(ious, kind="stable")[:GRID_SIZE]
    pictures = [visualize.crop_around(visualize.overlay_mask(_photo(photos.records[i]), masks[i], truths[i]),
                                      [b for b in (mask_to_box(masks[i]), mask_to_box(truths[i])) if b is not None])
                for i in order]
    captions = [f"IoU {ious[i]:.2f}  Dice {dices[i]:.2f}\n{Path(photos.records[i].path).name}" for i in order]
    page.section("photos", "Photos, worst IoU first", f"<p>{html.escape(where)}.</p>"
                 + _metrics_table(evaluate_on(model, photos))
                 + page.figure("photos", visualize.image_grid(pictures, captions, columns=4, tile=(280, 210)),
                               "Predicted plate pixels tinted red (probability above 0.5), the true mask's outline "
                               "green; IoU and Dice of each photo at its own resolution; each photo cut to the "
                               "part around its plates."))
    scores = np.concatenate([photo.map_to_photo(output[1]).ravel() for photo, output in zip(photos.photos, outputs)])
    precision, recall, thresholds = precision_recall(scores, np.concatenate([t.ravel() for t in truths]))
    page.section("precision-recall", "Pixel precision-recall", page.figure(
        "precision_recall", visualize.plot_curves(pr_panel(precision, recall, thresholds, "plate pixels")),
        "Every pixel of these photos, scored by the model's plate probability: precision and recall of the plate "
        "pixels as the threshold moves; the star is the threshold 0.5 the masks use."))
    return ious


def _photo(record):
    from .plates_data import load_image
    return load_image(record.path)


def _metrics_table(metrics):
    """The task's evaluate numbers as a table: python -m tinycnn.evaluate prints the same."""
    return _table(["metric (as tinycnn.evaluate)", "value"],
                  [[k, v] for k, v in metrics.items() if isinstance(v, (int, float))])

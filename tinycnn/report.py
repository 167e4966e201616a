"""python -m tinycnn.report RUN [--data DIR] [--split SPLIT]: RUN/report.html, a run to look at rather than read.

One self-contained HTML file (every picture inlined as base64, no script, no network) with the pictures also
written beside it, in RUN/report/. Its sections:

    overview       the task, the epochs, best.tcnn's epoch and its validation numbers
    curves         loss and every metric per epoch (tinycnn.visualize.plot_history)
    evaluation     catdog: the confusion matrix, per-class precision / recall, the precision-recall curve (two
                   classes), the most confidently wrong images and the images nearest the decision boundary.
                   plates-box: photos with the predicted (red) and true (green) boxes, worst IoU first, and the
                   share of photos found at each IoU threshold (one box per photo and no score: see there).
                   plates-seg: photos with the predicted mask (red) and the true mask's outline (green), worst
                   IoU first, and the pixel precision-recall curve of the plate probability.
    filters        the first conv layer's kernels
    feature maps   one input through each conv block
    summary        each block's output shape and parameters
    recipe         what the model file records: the task, its preprocessing and training settings

The model is RUN/best.tcnn (else last.tcnn); its file says the task and the data. Without --data the report
uses the data the run was trained on: for catdog its validation split (re-made as `tinycnn.train` makes it),
for the plate tasks the val split of the folder or of the built-in synthetic set. With --data, catdog uses
every image of DIR and the plate tasks DIR's --split (default val).

Training writes a minimal report at the end of every run (`write_report(run, minimal=True)`: overview,
curves, filters, summary, recipe: nothing that needs the data); this command writes the whole one.
"""
import argparse
import base64
import html
import importlib
import json
import os
import sys
from pathlib import Path

import numpy as np

from . import visualize
from .checks import UserInputError
from .cli import Parser, run_cli
from .saving import load_model

GRID_SIZE = 12       # photos per grid
PR_BINS = 256        # score thresholds of a precision-recall curve
PICTURES = "report"  # RUN/report/: the pictures beside report.html


def main(argv=None):
    parser = Parser("report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a run folder written by tinycnn.train (holds best.tcnn or last.tcnn)")
    parser.add_argument("--data", help="data to show the model on (default: the data it was trained on)")
    parser.add_argument("--split", default=None, help="plate tasks: which split of the data (default val)")
    args = parser.parse_args(argv)
    print(f"wrote {write_report(args.run, data=args.data, split=args.split)}")
    return 0


def write_report(run, data=None, split=None, minimal=False):
    """Write RUN/report.html and its pictures in RUN/report/; return the HTML's path."""
    run = Path(run)
    model_path = next((run / name for name in ("best.tcnn", "last.tcnn") if (run / name).is_file()), None)
    if model_path is None:
        raise UserInputError(f"{run} holds no best.tcnn or last.tcnn (is it a run folder of tinycnn.train?)")
    model = load_model(model_path, compile=False)
    meta = model.metadata
    page = Page(run, f"{run.name} ({meta.get('task', 'unknown task')}): tinycnn run report")
    history = _history(run, meta)
    overview(page, model_path, meta, history)
    if history:
        page.section("curves", "Training curves",
                     page.figure("curves", visualize.plot_history(history, best_epoch=meta.get("epochs_done")),
                                 "Loss and metrics per epoch; the star is the best validation value of each panel, "
                                 "the dotted line the epoch of best.tcnn. A panel whose values span more than "
                                 f"{visualize.LOG_SCALE_RATIO}x is drawn on a log scale."))
    example = None
    if minimal:
        page.note("A minimal report, written at the end of training. For the predictions on the data (where "
                  f"the model is wrong, feature maps): <code>python -m tinycnn.report {html.escape(str(run))}</code>")
    else:
        example = evaluation(page, model, meta, data, split)
    filters_section(page, model)
    if example is not None:
        maps_section(page, model, example)
    page.section("summary", "Model summary", f"<pre>{html.escape(visualize.model_summary(model))}</pre>")
    recipe = {k: v for k, v in meta.items() if k != "history"}
    page.section("recipe", f"Recipe recorded in {model_path.name}", _table(
        ["setting", "value"], [[k, v if isinstance(v, (str, int, float)) else json.dumps(v)]
                               for k, v in recipe.items()]))
    return page.write()


# ------------------------------------------------------------------------------------------------ the page

class Page:
    """The report being written: sections of HTML, pictures saved in RUN/report/ and inlined."""

    def __init__(self, run, title):
        self.run, self.title = Path(run), title
        self.sections, self.notes = [], []
        (self.run / PICTURES).mkdir(exist_ok=True)

    def figure(self, name, image, caption):
        """Save `image` as RUN/report/<name>.png; HTML showing it inlined, linked to the file."""
        path = self.run / PICTURES / f"{name}.png"
        visualize.save_picture(image, path)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return (f'<figure><a href="{PICTURES}/{name}.png"><img src="data:image/png;base64,{data}" '
                f'alt="{html.escape(name)}" data-file="{PICTURES}/{name}.png"></a>'
                f"<figcaption>{caption}</figcaption></figure>")

    def section(self, key, heading, body):
        self.sections.append((key, heading, body))

    def note(self, text):
        self.notes.append(text)

    def write(self):
        nav = " · ".join(f'<a href="#{key}">{html.escape(heading)}</a>' for key, heading, _ in self.sections)
        body = "\n".join(f'<section id="{key}"><h2>{html.escape(heading)}</h2>\n{content}</section>'
                         for key, heading, content in self.sections)
        notes = "".join(f'<p class="note">{n}</p>' for n in self.notes)
        text = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(self.title)}"
                f"</title><style>{STYLE}</style></head>\n<body><h1>{html.escape(self.title)}</h1>{notes}"
                f"<nav>{nav}</nav>\n{body}\n</body></html>\n")
        path = self.run / "report.html"
        tmp = self.run / ".report.html.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        return path


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1180px; margin: 1.5em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; }
nav { margin: 0.6em 0 1.2em; } nav a { color: #1f77b4; text-decoration: none; }
figure { margin: 0.6em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #555; max-width: 900px; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.92em; }
td, th { border: 1px solid #ddd; padding: 3px 10px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
.row { display: flex; flex-wrap: wrap; gap: 2em; align-items: flex-start; } .row figcaption { max-width: 460px; }
.note { background: #fff8e0; padding: 0.5em 0.8em; border-left: 4px solid #e0b000; }
"""


def _table(header, rows):
    def cell(value):
        if isinstance(value, float):
            return f'<td class="num">{value:.4g}</td>'
        if isinstance(value, int):
            return f'<td class="num">{value}</td>'
        return f"<td>{html.escape(str(value))}</td>"
    head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>" if header else ""
    return f"<table>{head}" + "".join("<tr>" + "".join(map(cell, r)) + "</tr>" for r in rows) + "</table>"


def _history(run, meta):
    if (run / "history.csv").is_file():
        return visualize.read_history(run / "history.csv")
    return meta.get("history") or []


def overview(page, model_path, meta, history):
    best_epoch = meta.get("epochs_done")
    best = next((row for row in history if row.get("epoch") == best_epoch), None)
    rows = [["task", meta.get("task", "?")], ["model file", model_path.name],
            ["epochs trained", len(history)], ["epoch of this model", best_epoch if best_epoch is not None else "?"]]
    if best:
        rows += [[key, value] for key, value in best.items() if key.startswith("val_")]
    page.section("overview", "Overview", _table(None, rows))


def filters_section(page, model):
    layer = visualize.first_conv_layer(model)
    kernel = layer.kernel.shape
    page.section("filters", "First layer's filters", page.figure(
        "filters", visualize.show_filters(layer),
        f"The {kernel[0]} kernels of <code>{html.escape(getattr(layer, 'name', type(layer).__name__))}</code> "
        f"({kernel[2]}x{kernel[3]} over {kernel[1]} channel(s)"
        + (", shown as colour" if kernel[1] == 3 else ", one grey tile per channel") +
        "), each scaled on its own: mid-grey is 0, light positive, dark negative."))


def maps_section(page, model, example):
    """example: (one model input, a caption naming it)."""
    x, name = example
    picture = visualize.as_picture(x if model.input_format == "channels_last" else np.transpose(x, (1, 2, 0)))
    figures = [page.figure("maps_input", visualize.fit_picture(picture, 192, 192), "the input")]
    for index, (block, maps) in enumerate(visualize.feature_maps(model, x)):
        shown = min(len(maps), 16)
        figures.append(page.figure(f"maps_{index:02d}", visualize.feature_map_grid(maps, max_channels=shown),
                                   f"<b>{html.escape(block)}</b>: {maps.shape[0]} maps of {maps.shape[1]}x"
                                   f"{maps.shape[2]}" + (f", the first {shown} shown" if shown < len(maps) else "")))
    page.section("feature-maps", "Feature maps", f"<p>One input, {html.escape(name)}, through each conv block; "
                 "each map is scaled to its own range (dark low, yellow high).</p>" + "".join(figures))


# ------------------------------------------------------------------------------------------------ evaluation

def evaluation(page, model, meta, data, split):
    """The task's evaluation sections; returns (one input, its name) for the feature maps."""
    task = meta.get("task")
    if task in ("catdog", "plates-box", "plates-seg"):
        # the sections live with the tasks (tasks/report_sections.py); the engine imports no task
        sections = importlib.import_module("tinycnn.tasks.report_sections")
        if task == "catdog":
            return sections.classifier_sections(page, model, meta, data)
        return sections.plate_sections(page, model, meta, data, split or "val")
    page.note(f"No evaluation section: the report does not know the task {task!r}.")
    return None


def precision_recall(scores, positive, bins=PR_BINS):
    """(precision, recall, thresholds) of `scores` in [0, 1] against the boolean `positive`, for the thresholds
    k / bins (a score >= threshold counts as positive), from a histogram: works for millions of pixels."""
    scores = np.clip(np.asarray(scores, np.float64).ravel(), 0, 1)
    positive = np.asarray(positive, bool).ravel()
    index = np.minimum((scores * bins).astype(np.int64), bins - 1)
    hits = np.bincount(index[positive], minlength=bins)[::-1].cumsum()[::-1]
    alarms = np.bincount(index[~positive], minlength=bins)[::-1].cumsum()[::-1]
    predicted = hits + alarms
    precision = np.where(predicted > 0, hits / np.maximum(predicted, 1), 1.0)
    recall = hits / max(int(positive.sum()), 1)
    return precision, recall, np.arange(bins) / bins


def average_precision(precision, recall):
    """The area under the precision-recall steps, recall falling as the threshold rises."""
    recall = np.append(recall, 0.0)
    return float(np.sum((recall[:-1] - recall[1:]) * precision))


def pr_panel(precision, recall, thresholds, label, at=0.5):
    """A precision-recall Panel, the point of threshold `at` starred."""
    i = int(np.searchsorted(thresholds, at))
    panel = visualize.Panel(f"precision-recall ({label}), AP {average_precision(precision, recall):.3f}",
                            [visualize.Series(label, list(recall), list(precision))], xlabel="recall",
                            ylabel="precision", integer_x=False, limits=(0, 1.02, 0, 1.02))
    panel.mark = (float(recall[i]), float(precision[i]), f"threshold {at}: P {precision[i]:.2f}, R {recall[i]:.2f}")
    return panel


if __name__ == "__main__":
    sys.exit(run_cli("report", main))

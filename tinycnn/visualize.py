"""Pictures of a training run and of a model, for a person to look at: in a notebook, or in the run report.

    from tinycnn import visualize
    visualize.plot_history("runs/catdog-1")            # loss and every metric per epoch (history.csv)
    visualize.show_filters(model)                      # the first conv layer's kernels, one tile per filter
    maps = visualize.feature_maps(model, x)            # [(block name, (C, H, W) array)] of one input
    visualize.feature_map_grid(maps[0][1])             # one tile per channel
    visualize.confusion_matrix_image(matrix, ["cat", "dog"])
    visualize.draw_boxes(photo, predicted, truth)      # predicted boxes red, true boxes green
    visualize.overlay_mask(photo, mask, truth_mask)    # predicted pixels tinted red, the true mask's outline green
    visualize.image_grid(pictures, captions)

Every picture is a PIL.Image (a notebook shows it inline); give `path=` to also save it as PNG.

Curves (plot_history, plot_curves) are drawn with matplotlib when it is installed (`pip install tinycnn[plot]`):
axes, ticks, a legend, a log scale when a series spans more than LOG_SCALE_RATIO, the best epoch marked, the
learning rate on a panel of its own. matplotlib is used through its object API on the Agg canvas, so it never
opens a window and never changes a notebook's backend. Without matplotlib the same panels are drawn plainly
with Pillow (no ticks, linear scale) and a warning says so once. Everything else is Pillow and NumPy.

Feature maps: `feature_maps` runs one input through the model in inference mode and keeps the output of each
conv block: for a Sequential, each conv layer with the batch norm / activation layers right after it; for other
Modules, each top-level sub-module holding a conv layer (a U-Net's encoder and decoder blocks, a MobileNet's
stem, inverted residual blocks and head), in the order they run. Maps are returned (C, H, W) whatever the
block's data_format.
"""
import csv
import json
import math
import os
import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from .layers import Activation, BatchNormalization, Conv2D, Conv2DTranspose, Dropout
from .models import Sequential
from .tensor import Tensor, no_grad

LOG_SCALE_RATIO = 50        # a panel whose positive values span more than this ratio gets a log y axis
TRAIN_COLOUR, VAL_COLOUR = (31, 119, 180), (255, 127, 14)
COLOUR_NAMES = {TRAIN_COLOUR: "blue", VAL_COLOUR: "orange"}   # the Pillow picture has no legend: its title says
PREDICTED_COLOUR, TRUE_COLOUR = (255, 0, 0), (0, 200, 0)
NOT_METRICS = ("lr", "learning_rate", "images_per_sec")   # history columns that are no metric of the model
CONV_LAYERS = (Conv2D, Conv2DTranspose)
# viridis at 0, 1/4, 1/2, 3/4, 1: feature maps are coloured by interpolating between these
VIRIDIS = np.array([(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)], np.float32)

_fallback_warned = False


# ------------------------------------------------------------------------------------------------ curves

@dataclass
class Series:
    label: str
    x: list
    y: list
    colour: tuple = TRAIN_COLOUR
    dashed: bool = False


@dataclass
class Panel:
    """One plot: its series, axis labels, a marked point (x, y, text) and a vertical line (x, text)."""
    title: str
    series: list
    xlabel: str = "epoch"
    ylabel: str = ""
    mark: tuple | None = None
    vline: tuple | None = None
    log: bool = False
    integer_x: bool = True
    limits: tuple | None = None      # (xmin, xmax, ymin, ymax), or None for matplotlib's choice
    notes: list = field(default_factory=list)


def read_history(history):
    """Rows {"epoch": int, key: float} from a list of dicts, a history.csv path or a run folder."""
    if isinstance(history, (str, os.PathLike)):
        path = os.fspath(history)
        if os.path.isdir(path):
            path = os.path.join(path, "history.csv")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no history at {path}")
        with open(path, newline="") as f:
            return [{k: (int(float(v)) if k == "epoch" else float(v)) for k, v in row.items() if v not in ("", None)}
                    for row in csv.DictReader(f)]
    return [dict(row) for row in history]


def history_panels(rows, best_epoch=None):
    """The Panels of a history: loss first, then every metric (train and val), then the learning rate."""
    keys = {k for row in rows for k in row if k != "epoch"}
    names = sorted({k[4:] if k.startswith("val_") else k for k in keys} - set(NOT_METRICS),
                   key=lambda name: (name != "loss", name))
    panels = []
    for name in names:
        series = [Series(label, *_column(rows, key), colour)
                  for label, key, colour in (("train", name, TRAIN_COLOUR), ("validation", f"val_{name}", VAL_COLOUR))
                  if key in keys]
        panel = Panel(name, series, ylabel=name, log=wants_log_scale(_values(series)))
        panel.mark = _best_point(rows, f"val_{name}" if f"val_{name}" in keys else name, lower_is_better(name))
        panels.append(panel)
    lr_key = next((k for k in ("lr", "learning_rate") if k in keys), None)
    if lr_key:
        series = [Series("learning rate", *_column(rows, lr_key), (44, 160, 44))]
        panels.append(Panel("learning rate", series, ylabel="learning rate", log=wants_log_scale(_values(series))))
    for panel in panels:
        if best_epoch is not None:
            panel.vline = (best_epoch, f"best.tcnn (epoch {best_epoch})")
    return panels


def plot_history(history, path=None, best_epoch=None):
    """Loss and every metric per epoch, train and validation, and the learning rate if recorded: a PIL image.

    history: rows of `fit`'s logs with an "epoch" key, a history.csv or a run folder. best_epoch: the epoch of
    best.tcnn, drawn as a dotted line on every panel. On each panel a star marks the best validation value."""
    rows = read_history(history)
    if not rows:
        raise ValueError("the history is empty: no finished epoch to plot")
    return plot_panels(history_panels(rows, best_epoch), path)


def plot_curves(panel, path=None):
    """One Panel (e.g. a precision-recall curve) as a PIL image."""
    return plot_panels([panel], path, columns=1)


def plot_panels(panels, path=None, columns=3):
    """Panels side by side (wrapping after `columns`), with matplotlib if installed, else with Pillow."""
    figure_module = _matplotlib()
    image = _panels_matplotlib(panels, columns, figure_module) if figure_module else _panels_pillow(panels)
    return _finish(image, path)


def wants_log_scale(values):
    """True when the values are all positive and span more than LOG_SCALE_RATIO (max / min)."""
    finite = [v for v in values if math.isfinite(v)]
    return bool(finite) and min(finite) > 0 and max(finite) / min(finite) > LOG_SCALE_RATIO


def lower_is_better(name):
    return "loss" in name or "error" in name


def _column(rows, key):
    points = [(row["epoch"], row[key]) for row in rows if key in row and math.isfinite(row[key])]
    return [p[0] for p in points], [p[1] for p in points]


def _values(series):
    return [v for s in series for v in s.y]


def _best_point(rows, key, lower):
    epochs, values = _column(rows, key)
    if not values:
        return None
    i = int(np.argmin(values) if lower else np.argmax(values))
    return epochs[i], values[i], f"best {key}: {values[i]:.4g} (epoch {epochs[i]})"


def _matplotlib():
    """matplotlib.figure (Agg canvas, no pyplot), or None with a warning said once when it is not installed."""
    global _fallback_warned
    try:
        from matplotlib import figure
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401 - the canvas we draw on
        return figure
    except ImportError:
        if not _fallback_warned:
            _fallback_warned = True
            warnings.warn("matplotlib is not installed: curves are drawn plainly with Pillow (no ticks, linear "
                          "scale); pip install 'tinycnn[plot]' for proper plots", stacklevel=4)
        return None


def _panels_matplotlib(panels, columns, figure_module):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.ticker import MaxNLocator
    columns = min(columns, len(panels))
    rows = math.ceil(len(panels) / columns)
    fig = figure_module.Figure(figsize=(4.6 * columns, 3.5 * rows), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    for index, panel in enumerate(panels):
        ax = fig.add_subplot(rows, columns, index + 1)
        for s in panel.series:
            ax.plot(s.x, s.y, "--" if s.dashed else "-", marker="o" if len(s.x) < 40 else None, markersize=3,
                    color=np.array(s.colour) / 255, label=s.label)
        if panel.mark:
            x, y, text = panel.mark
            ax.plot([x], [y], "*", color="crimson", markersize=13, label=text, zorder=5)
        if panel.vline:
            ax.axvline(panel.vline[0], color="grey", linestyle=":", label=panel.vline[1])
        if panel.log:
            ax.set_yscale("log")
        if panel.integer_x:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if panel.limits:
            ax.set_xlim(*panel.limits[:2])
            ax.set_ylim(*panel.limits[2:])
        ax.set_title(panel.title + ("  (log scale)" if panel.log else ""))
        ax.set_xlabel(panel.xlabel)
        ax.set_ylabel(panel.ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    return _figure_to_image(fig)


def _figure_to_image(fig):
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    return Image.fromarray(rgba[..., :3].copy())


def _panels_pillow(panels, panel_size=(450, 360)):
    """The plain picture: one box per panel, train blue and validation orange, the value range in the title."""
    width, height = panel_size
    image = Image.new("RGB", (width * len(panels), height), "white")
    draw = ImageDraw.Draw(image)
    for index, panel in enumerate(panels):
        left, right, top, bottom = index * width + 50, (index + 1) * width - 20, 30, height - 40
        draw.rectangle([left, top, right, bottom], outline="black")
        points = [(x, y) for s in panel.series for x, y in zip(s.x, s.y)]
        if not points:
            continue
        x_low, x_high = _span([p[0] for p in points])
        y_low, y_high = _span([p[1] for p in points])
        if panel.limits:
            x_low, x_high, y_low, y_high = panel.limits
        scale = lambda x, y: (left + (x - x_low) / (x_high - x_low) * (right - left),  # noqa: E731
                              bottom - (y - y_low) / (y_high - y_low) * (bottom - top))
        names = ", ".join(f"{s.label} {COLOUR_NAMES.get(s.colour, '')}".strip() for s in panel.series)
        draw.text((left, 10), f"{panel.title} ({names})  [{y_low:.3g}, {y_high:.3g}]", fill="black")
        for s in panel.series:
            xy = [scale(x, y) for x, y in zip(s.x, s.y)]
            if len(xy) > 1:
                draw.line(xy, fill=s.colour, width=2)
            for x, y in xy:
                draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=s.colour)
        draw.text((left, bottom + 8), f"{panel.xlabel} {x_low:.3g} to {x_high:.3g}", fill="black")
    return image


def _span(values):
    low, high = min(values), max(values)
    return (low, high) if high > low else (low - 0.5, low + 0.5)


# ------------------------------------------------------------------------------------------------ filters, maps

def first_conv_layer(model):
    """The first conv layer of a model, in the order its modules were registered."""
    for _, module in model.named_modules():
        if isinstance(module, CONV_LAYERS) and getattr(module, "kernel", None) is not None:
            return module
    raise ValueError(f"{type(model).__name__} has no built conv layer")


def show_filters(layer, path=None, tile=40, columns=8):
    """A conv layer's kernels (filters, C, KH, KW) as tiles: RGB when C is 3, else one grey tile per channel
    (at most 8). Each filter is scaled on its own, mid-grey = 0. A model stands for its first conv layer."""
    if getattr(layer, "kernel", None) is None:
        layer = first_conv_layer(layer)
    kernel = np.asarray(layer.kernel.numpy(), np.float32)
    peak = np.abs(kernel).reshape(len(kernel), -1).max(axis=1).reshape(-1, 1, 1, 1)
    scaled = kernel / (2 * np.where(peak > 0, peak, 1)) + 0.5
    if kernel.shape[1] == 3:
        tiles = [_to_uint8(f.transpose(1, 2, 0)) for f in scaled]
    else:
        tiles = [np.concatenate([_pad_right(_to_uint8(c)) for c in f[:8]], axis=1) for f in scaled]
    return _finish(_tile_grid([Image.fromarray(t).convert("RGB") for t in tiles], columns, tile), path)


def feature_maps(model, x):
    """[(block name, (C, H, W) float32 array)] of one input through each conv block of `model`, in order.

    x: one input as the model's predict takes it ((H, W, C) for a Sequential, (C, H, W) for other Modules), or a
    batch of one. Runs in inference mode without gradients; the model's own outputs are unchanged."""
    def blocks(tensor):
        if isinstance(model, Sequential):
            return _sequential_blocks(model, tensor)
        return _recorded_children(model, tensor, only_conv=True)
    return _run_one_input(model, x, blocks, "feature_maps")


def block_outputs(model, x):
    """[(name, type name, output shape, parameter count)] of each top-level sub-module (each layer of a
    Sequential) for one input x, as the model's predict takes it: the rows of a model summary."""
    def rows(tensor):
        if isinstance(model, Sequential):
            found = []
            for layer in model.layers:
                tensor = layer(tensor)
                found.append((layer.name, type(layer).__name__, tuple(tensor.shape[1:]), layer.count_params()))
            return found
        children = dict(model._modules)
        outputs = _recorded_children(model, tensor, only_conv=False, keep_layout=True)
        return [(name, type(children[name]).__name__, out.shape, children[name].count_params())
                for name, out in outputs]
    return _run_one_input(model, x, rows, "block_outputs")


def _run_one_input(model, x, run, caller):
    """run(tensor) on one input x (as predict takes it; NCHW inside) in inference mode without gradients."""
    x = np.asarray(x, np.float32)
    x = x[None] if x.ndim == 3 else x
    if x.ndim != 4 or len(x) != 1:
        raise ValueError(f"{caller} takes one image (3 axes) or a batch of one, got shape {x.shape}")
    model._record_input_shape(x)
    if model.input_format == "channels_last":
        x = x.transpose(0, 3, 1, 2)
    model._ensure_built()
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            return run(Tensor(np.ascontiguousarray(x), device=model.device))
    finally:
        model.train(was_training)


def model_summary(model):
    """A Keras-like summary as text: each block (layer) with its output shape and parameters."""
    shape = getattr(model, "build_input_shape", None)
    if not shape:
        raise ValueError("model_summary needs a built model (one that has seen an input or was loaded from a file)")
    x = np.zeros(shape, np.float32)
    if model.input_format == "channels_last":
        x = x.transpose(1, 2, 0)
    rows = block_outputs(model, x)
    width = max(len(f"{name} ({kind})") for name, kind, _, _ in rows) + 2
    lines = [f"Model: {type(model).__name__}, input {tuple(shape)} (C, H, W)",
             f"{'Block (type)':<{width}}{'Output shape':<24}{'Params':>12}", "=" * (width + 36)]
    lines += [f"{f'{name} ({kind})':<{width}}{str(out_shape):<24}{params:>12,}" for name, kind, out_shape, params in rows]
    lines += ["=" * (width + 36), f"Total params: {model.count_params():,}"]
    return "\n".join(lines)


def _sequential_blocks(model, x):
    """Each conv layer of a Sequential with the batch norm / activation / dropout layers right after it."""
    maps, current = [], None
    for layer in model.layers:
        x = layer(x)
        if isinstance(layer, CONV_LAYERS):
            if current:
                maps.append(current)
            current = [layer.name + f" ({type(layer).__name__}", _channels_first(x.numpy()[0], layer)]
        elif current and isinstance(layer, (BatchNormalization, Activation, Dropout)):
            current[0] += f" + {type(layer).__name__}"
            current[1] = _channels_first(x.numpy()[0], layer)
        elif current:
            maps.append(current)
            current = None
    if current:
        maps.append(current)
    return [(name + ")", array) for name, array in maps]


def _recorded_children(model, x, only_conv, keep_layout=False):
    """Run the model once, recording the output of each top-level sub-module (those holding a conv layer when
    only_conv) by wrapping its forward for the duration of the call."""
    recorded, wrapped = [], []
    for name, child in model._modules.items():
        convs = [m for _, m in child.named_modules() if isinstance(m, CONV_LAYERS)]
        if only_conv and not convs:
            continue
        original = child.forward

        def recording(*args, _name=name, _original=original, _conv=(convs or [None])[0], **kwargs):
            out = _original(*args, **kwargs)
            array = out.numpy()[0]
            recorded.append((_name, array if keep_layout else _channels_first(array, _conv)))
            return out

        object.__setattr__(child, "forward", recording)
        wrapped.append(child)
    try:
        model(x)
    finally:
        for child in wrapped:
            del child.__dict__["forward"]
    return recorded


def _channels_first(array, layer):
    """(C, H, W) from a block output that is (H, W, C) when its conv layer is channels-last."""
    if array.ndim == 3 and getattr(layer, "data_format", "channels_first") == "channels_last":
        return np.ascontiguousarray(array.transpose(2, 0, 1))
    return array


def feature_map_grid(maps, path=None, max_channels=16, tile=64, columns=16):
    """(C, H, W) maps as tiles (the first max_channels), each scaled to its own range and coloured (viridis)."""
    maps = np.asarray(maps, np.float32)
    if maps.ndim != 3:
        raise ValueError(f"feature_map_grid takes (C, H, W) maps, got shape {maps.shape}")
    height = max(1, round(tile * maps.shape[1] / max(maps.shape[1:])))
    width = max(1, round(tile * maps.shape[2] / max(maps.shape[1:])))
    tiles = [Image.fromarray(colour_map(channel)).resize((width, height), Image.Resampling.NEAREST)
             for channel in maps[:max_channels]]
    return _finish(_tile_grid(tiles, columns, tile), path)


def colour_map(values):
    """(H, W) values -> (H, W, 3) uint8, scaled to their own range, viridis colours."""
    values = np.asarray(values, np.float32)
    low, high = float(values.min()), float(values.max())
    t = (values - low) / (high - low) if high > low else np.zeros_like(values)
    position = t * (len(VIRIDIS) - 1)
    index = np.minimum(position.astype(np.int64), len(VIRIDIS) - 2)
    frac = (position - index)[..., None]
    return (VIRIDIS[index] * (1 - frac) + VIRIDIS[index + 1] * frac + 0.5).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ matrices, photos

def confusion_matrix_image(matrix, class_names, path=None, cell=90):
    """A confusion matrix (rows: true class, columns: predicted) as a picture: each cell shaded by its share
    of the row (the recall), with its count and share written in it. The counts and each cell's rectangle are
    kept in the PNG's text (key "tinycnn:confusion"), so a program can read back what the picture shows."""
    matrix = np.asarray(matrix, np.int64)
    k = len(class_names)
    if matrix.shape != (k, k):
        raise ValueError(f"a confusion matrix of {k} classes must be {k}x{k}, got shape {matrix.shape}")
    font, small = _font(16), _font(12)
    label_width = max(60, 10 + max(int(font.getlength(str(n))) for n in class_names))
    left, top = label_width + 30, 60
    image = Image.new("RGB", (left + k * cell + 20, top + k * cell + 20), "white")
    draw = ImageDraw.Draw(image)
    draw.text((left + k * cell / 2, 8), "predicted", fill="black", font=font, anchor="mt")
    draw.text((8, top + k * cell / 2), "true", fill="black", font=font, anchor="lm")
    rows = matrix.sum(axis=1, keepdims=True)
    shares = matrix / np.where(rows > 0, rows, 1)
    cells = []
    for i in range(k):
        draw.text((left - 8, top + i * cell + cell / 2), str(class_names[i]), fill="black", font=font, anchor="rm")
        draw.text((left + i * cell + cell / 2, top - 8), str(class_names[i]), fill="black", font=font, anchor="mb")
        for j in range(k):
            box = [left + j * cell, top + i * cell, left + (j + 1) * cell - 1, top + (i + 1) * cell - 1]
            draw.rectangle(box, fill=share_colour(shares[i, j]), outline="white")
            ink = "white" if shares[i, j] > 0.5 else "black"
            middle = (box[0] + cell / 2, box[1] + cell / 2)
            draw.text((middle[0], middle[1] - 2), str(matrix[i, j]), fill=ink, font=font, anchor="mb")
            draw.text((middle[0], middle[1] + 4), f"{shares[i, j]:.0%}", fill=ink, font=small, anchor="mt")
            cells.append(box)
    image.info["tinycnn:confusion"] = json.dumps({"counts": matrix.tolist(), "class_names": list(class_names),
                                                  "cells": cells})
    return _finish(image, path)


def share_colour(share):
    """White (0) to dark blue (1): the shade of a confusion-matrix cell of that row share."""
    dark = np.array([8, 48, 107], np.float32)
    return tuple(int(round(c)) for c in 255 + (dark - 255) * float(share))


def draw_boxes(image, predicted=(), truth=(), path=None, width=2):
    """The photo with the true boxes in green and the predicted boxes in red, (xmin, ymin, xmax, ymax) pixels.

    image: a PIL image, or an (H, W, 3) / (H, W) array (float in [0, 1] or uint8)."""
    picture = as_picture(image)
    draw = ImageDraw.Draw(picture)
    for boxes, colour in ((truth, TRUE_COLOUR), (predicted, PREDICTED_COLOUR)):
        for xmin, ymin, xmax, ymax in np.asarray(boxes, np.float32).reshape(-1, 4):
            draw.rectangle([xmin, ymin, max(xmin, xmax - 1), max(ymin, ymax - 1)], outline=colour, width=width)
    return _finish(picture, path)


def overlay_mask(image, mask, truth=None, path=None, colour=PREDICTED_COLOUR, alpha=0.5):
    """The photo with the mask's pixels tinted (red) and, if given, the true mask's outline in green."""
    pixels = np.asarray(as_picture(image), np.float32)
    chosen = np.asarray(mask) > 0
    pixels[chosen] = (1 - alpha) * pixels[chosen] + alpha * np.asarray(colour, np.float32)
    if truth is not None:
        pixels[mask_outline(np.asarray(truth) > 0)] = TRUE_COLOUR
    return _finish(Image.fromarray((pixels + 0.5).astype(np.uint8)), path)


def mask_outline(mask):
    """The pixels of a boolean mask that touch a pixel outside it (4-neighbours; the image border counts)."""
    padded = np.pad(mask, 1, constant_values=False)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def image_grid(pictures, captions=(), path=None, columns=4, tile=200):
    """Pictures in a grid, each fitted into a tile (an int: a square; or (width, height)) with its aspect kept,
    and its caption lines below. Pictures much smaller than the tile (model inputs) are enlarged pixel by
    pixel (nearest), others smoothly."""
    tile_w, tile_h = (tile, tile) if isinstance(tile, int) else tile
    font = _font(13)
    captions = list(captions) + [""] * (len(pictures) - len(captions))
    lines = max((len(str(c).splitlines()) for c in captions), default=0)
    cell_w, cell_h = tile_w + 10, tile_h + 12 + 17 * lines
    columns = max(1, min(columns, len(pictures)))
    rows = math.ceil(len(pictures) / columns) if pictures else 0
    grid = Image.new("RGB", (columns * cell_w, max(rows, 1) * cell_h), "white")
    draw = ImageDraw.Draw(grid)
    for index, (picture, caption) in enumerate(zip(pictures, captions)):
        fitted = fit_picture(as_picture(picture), tile_w, tile_h)
        x, y = (index % columns) * cell_w + 5, (index // columns) * cell_h + 5
        grid.paste(fitted, (x + (tile_w - fitted.width) // 2, y + tile_h - fitted.height))
        lines = [fit_text(line, font, tile_w) for line in str(caption).splitlines()]
        draw.multiline_text((x, y + tile_h + 4), "\n".join(lines), fill="black", font=font, spacing=3)
    return _finish(grid, path)


def fit_text(text, font, width):
    """`text`, shortened in the middle with an ellipsis until it is at most `width` px wide in `font`."""
    if font.getlength(text) <= width:
        return text
    keep = len(text)
    while keep > 2 and font.getlength(f"{text[:keep // 2]}...{text[len(text) - keep // 2:]}") > width:
        keep -= 2
    return f"{text[:keep // 2]}...{text[len(text) - keep // 2:]}"


def fit_picture(picture, width, height):
    """The picture scaled to fit width x height with its aspect kept: nearest-neighbour by a whole factor when
    it is under half that size (so pixels stay pixels), else smoothly."""
    scale = min(width / picture.width, height / picture.height)
    if scale >= 2:
        factor = int(scale)
        return picture.resize((picture.width * factor, picture.height * factor), Image.Resampling.NEAREST)
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    return picture.resize(size, Image.Resampling.LANCZOS) if size != picture.size else picture


def crop_around(picture, boxes, margin=1.0, min_share=0.5):
    """The part of a PIL picture around `boxes` (xmin, ymin, xmax, ymax): their union grown by `margin` times its
    size on each side, at least `min_share` of the picture's side, with the picture's aspect ratio; the whole
    picture when there is no box."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if not len(boxes):
        return picture
    (x0, y0), (x1, y1) = boxes[:, :2].min(axis=0), boxes[:, 2:].max(axis=0)
    width, height = picture.size
    crop_w = max((x1 - x0) * (1 + 2 * margin), (y1 - y0) * (1 + 2 * margin) * width / height, width * min_share)
    crop_w = min(crop_w, width)
    crop_h = crop_w * height / width
    left = min(max((x0 + x1 - crop_w) / 2, 0), width - crop_w)
    top = min(max((y0 + y1 - crop_h) / 2, 0), height - crop_h)
    return picture.crop((round(left), round(top), round(left + crop_w), round(top + crop_h)))


def as_picture(image):
    """A PIL RGB image from a PIL image or an (H, W, 3) / (H, W, 1) / (H, W) array, float [0, 1] or uint8."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.dtype != np.uint8:
        array = _to_uint8(array)
    return Image.fromarray(array).convert("RGB")


# ------------------------------------------------------------------------------------------------ helpers

def _to_uint8(values):
    return (np.clip(np.asarray(values, np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)


def _pad_right(tile):
    return np.pad(tile, ((0, 0), (0, 1)), constant_values=255)


def _tile_grid(tiles, columns, tile):
    """Tiles enlarged (nearest) so their longer side is about `tile` px, in a grid with 4 px gaps."""
    factor = max(1, tile // max(max(t.size) for t in tiles))
    tiles = [t.resize((t.width * factor, t.height * factor), Image.Resampling.NEAREST) for t in tiles]
    width, height = max(t.width for t in tiles), max(t.height for t in tiles)
    columns = min(columns, len(tiles))
    rows = math.ceil(len(tiles) / columns)
    grid = Image.new("RGB", (columns * (width + 4) + 4, rows * (height + 4) + 4), "white")
    for index, t in enumerate(tiles):
        grid.paste(t, (4 + (index % columns) * (width + 4), 4 + (index // columns) * (height + 4)))
    return grid


def _font(size):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):   # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def save_picture(image, path):
    """Save a picture as PNG (keeping its tinycnn:* text entries), atomically: a reader never sees half a file."""
    info = PngInfo()
    for key, value in image.info.items():
        if key.startswith("tinycnn:"):
            info.add_text(key, value)
    tmp = f"{os.fspath(path)}.tmp.png"
    image.save(tmp, pnginfo=info)
    os.replace(tmp, path)


def _finish(image, path):
    """Save to `path` when given one; return the image."""
    if path is not None:
        save_picture(image, path)
    return image

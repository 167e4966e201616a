"""The plates-box detector (--head center) in PyTorch, on the same split and recipe, to judge tinycnn's numbers.

    /tmp/torchenv/bin/python benchmarks/torch_plates_detect.py --data ../shared/data/plates --json

The same network as tasks/plates_detect.PlateCenterNet: the MobileNetV2-style backbone of
benchmarks/torch_plates_box.py's blocks (stem 16 s2; stages (1,16,1,1) (4,24,2,2) | (4,32,3,2) |
(4,64,2,2) (4,96,1,1) ending at strides 4, 8, 16), a 1x1 conv to 64 channels, two neck steps (nearest 2x
upsampling + a 1x1 lateral of the stride-8 / stride-4 map, added, depthwise 3x3 + 1x1, batch norm and ReLU6)
and two heads (depthwise 3x3, a hidden 1x1, then a 1x1 conv to 1 heat-map logit, + the prior −2.19, and to 4
box values). The same targets (tasks/centernet_targets.py, loaded from its file: dense box regression), loss
(CenterNet focal loss α 2 β 4 + the weighted L1 of log sizes and offsets, each over the number of plates),
augmentation (box_ops.augment_sample with every box, scale 0.6-1.6, no rotation), AdamW 2e-3 (weight decay 1e-4, ε 1e-7) with a 3-epoch linear
warm-up then a cosine to 0, batch 16, 80 epochs, best epoch on val_loss; the same decoding (3x3 max-pool
peaks, scores >= 0.01 for AP), threshold (the best F1's on val) and metrics (tasks/detection_metrics.py) on
the test split in the photos' pixels. Pre-training as tinycnn's (tasks/detect_pretrain.py): first a run on the
built-in street scenes' folder (~/.cache/tinycnn/plates-v*-1000-60-60-p15-seed0-street, written by tinycnn's
own pre-training) with --epochs 15 --save pre.pt, then --init pre.pt on the photos. --latency also times a batch-1 forward at --img-size (eval mode, median).
Only torch, numpy and Pillow are needed.
"""
import argparse
import csv
import importlib
import json
import math
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn
from torch.nn import functional as F

HERE = Path(__file__).resolve().parent


def load_tasks():
    """tasks/ as a package of its own ("plate_tasks"), so its NumPy-only modules import without tinycnn."""
    package = types.ModuleType("plate_tasks")
    package.__path__ = [str(HERE.parent / "tasks")]
    sys.modules["plate_tasks"] = package
    return (importlib.import_module("plate_tasks.box_ops"), importlib.import_module("plate_tasks.centernet_targets"),
            importlib.import_module("plate_tasks.detection_metrics"))


box_ops, targets, metrics_module = load_tasks()
sys.path.insert(0, str(HERE))
from torch_plates_box import ConvBN, InvertedResidual  # noqa: E402

T = 4  # the inverted residuals' expansion after the first block (tasks/plates_detect.py RECIPE)
STAGES = (((1, 16, 1, 1), (T, 24, 2, 2)), ((T, 32, 3, 2),), ((T, 64, 2, 2), (T, 96, 1, 1)))
HEAT_PRIOR = -2.19
STEM, NECK = 16, 64
SCALE = (0.6, 1.6, 0.1)  # augmentation: scale range and shift


# ------------------------------------------------------------------------------------------ data

def read_split(root, split, img_size):
    """Letterboxed photos (N, 3, S, S), every plate's normalised canvas box padded (N, M, 4), the photos' own
    boxes, and each photo's geometry (scale, pad, width, height)."""
    rows = {}
    with open(Path(root) / "annotations" / f"{split}_annotations.csv", newline="") as file:
        for row in csv.DictReader(file):
            rows.setdefault(row["filename"], []).append([float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax")])
    x, canvas_boxes, truth, geometry = [], [], [], []
    for name, boxes in rows.items():
        with Image.open(Path(root) / split / name) as image:
            pixels = np.asarray(ImageOps.exif_transpose(image).convert("RGB"), np.float32) / 255
        boxes = np.asarray(boxes, np.float32)
        canvas, scale, pad = box_ops.letterbox(pixels, img_size)
        x.append(canvas.transpose(2, 0, 1))
        canvas_boxes.append(box_ops.boxes_to_letterbox(boxes, scale, pad, size=img_size))
        truth.append(boxes)
        geometry.append((scale, pad, pixels.shape[1], pixels.shape[0]))
    return np.stack(x), targets.pad_boxes(canvas_boxes), truth, geometry


def augment(x, y, rng):
    """box_ops.augment_sample on each picture with all its boxes."""
    size = x.shape[2]
    out_x, out_y = np.empty_like(x), np.full_like(y, -1.0)
    for i in range(len(x)):
        boxes = targets.valid_boxes(y[i])
        image, moved, _ = box_ops.augment_sample(x[i].transpose(1, 2, 0), boxes * size, None, rng,
                                                 scale_translate=SCALE, max_rotation_deg=0.0)
        out_x[i], out_y[i, :len(moved)] = image.transpose(2, 0, 1), moved / size
    return out_x, out_y


# ------------------------------------------------------------------------------------------ model

class NeckStep(nn.Module):
    def __init__(self, fine_channels):
        super().__init__()
        self.lateral = ConvBN(fine_channels, NECK, act=False)
        self.depthwise = ConvBN(NECK, NECK, 3, groups=NECK)
        self.pointwise = ConvBN(NECK, NECK)

    def forward(self, coarse, fine):
        return self.pointwise(self.depthwise(F.interpolate(coarse, scale_factor=2, mode="nearest")
                                             + self.lateral(fine)))


class Head(nn.Module):
    """tinycnn's "separable" head: depthwise 3x3, a hidden 1x1 (BN, ReLU6), then the 1x1 out."""
    def __init__(self, outputs):
        super().__init__()
        self.depthwise = ConvBN(NECK, NECK, 3, groups=NECK)
        self.hidden = ConvBN(NECK, NECK)
        self.out = nn.Conv2d(NECK, outputs, 1)
        nn.init.xavier_uniform_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x):
        return self.out(self.hidden(self.depthwise(x)))


class CenterNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = ConvBN(3, STEM, 3, 2)
        cin, self.stages, widths = STEM, nn.ModuleList(), []
        for stage in STAGES:
            blocks = []
            for t, c, n, s in stage:
                for i in range(n):
                    blocks.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                    cin = c
            self.stages.append(nn.Sequential(*blocks))
            widths.append(cin)
        self.top = ConvBN(cin, NECK)
        self.up8, self.up4 = NeckStep(widths[1]), NeckStep(widths[0])
        self.heat, self.box = Head(1), Head(4)

    def forward(self, x):
        features, x = [], self.stem(x)
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        x = self.up4(self.up8(self.top(features[2]), features[1]), features[0])
        return torch.cat([self.heat(x) + HEAT_PRIOR, self.box(x)], dim=1)


# ------------------------------------------------------------------------------------------ loss, decoding

def focal_loss(z, t, alpha=2.0, beta=4.0):
    p = torch.sigmoid(z)
    positive = t >= 1
    terms = torch.where(positive, (1 - p) ** alpha * F.softplus(-z), (1 - t) ** beta * p ** alpha * F.softplus(z))
    return terms.sum() / max(1, int(positive.sum()))


def centernet_loss(output, padded):
    heat, regression, mask = (torch.from_numpy(a) for a in targets.encode_batch(padded, output.shape[2] * targets.STRIDE))
    plates = max(1.0, float(mask[:, 0].sum()))
    errors = (output[:, 1:5] - regression).abs() * mask
    return focal_loss(output[:, 0:1], heat) + errors[:, 0:2].sum() / plates + errors[:, 2:4].sum() / plates


def decode(output, threshold):
    heat = torch.sigmoid(output[0:1].double())
    peaks = (heat >= F.max_pool2d(heat, 3, stride=1, padding=1)) & (heat >= threshold)
    rows, cols = (v.numpy() for v in torch.nonzero(peaks[0], as_tuple=True))
    scores = heat[0].numpy()[rows, cols]
    order = np.argsort(-scores, kind="stable")[:100]
    return targets.boxes_at(output.numpy(), rows[order], cols[order]), scores[order]


def to_photo(boxes, geometry, img_size):
    scale, pad, width, height = geometry
    pixels = box_ops.boxes_from_letterbox(boxes / img_size, scale, pad, size=img_size) if len(boxes) else boxes
    return np.clip(pixels, 0, [width, height, width, height]).reshape(-1, 4)


def predict(model, x, batch=32):
    model.eval()
    with torch.no_grad():
        return torch.cat([model(torch.from_numpy(x[i:i + batch])) for i in range(0, len(x), batch)])


def detections(model, x, geometry, img_size):
    """[(boxes in the photo's pixels, scores)] of every picture, every peak scoring at least 0.01."""
    return [(to_photo(boxes, g, img_size), scores)
            for (boxes, scores), g in ((decode(output, 0.01), g) for output, g in zip(predict(model, x), geometry))]


def warmup_cosine(warmup_steps, total_steps):
    """The rate factor of step s: linear from 0 over warm-up, then a cosine to 0 (tinycnn's CosineDecay)."""
    def factor(s):
        if s < warmup_steps:
            return s / warmup_steps
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (s - warmup_steps) / max(1, total_steps - warmup_steps))))
    return factor


def latency_ms(model, img_size, repeats=30):
    model.eval()
    x = torch.rand(1, 3, img_size, img_size)
    with torch.no_grad():
        for _ in range(5):
            model(x)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data")
    parser.add_argument("--img-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=80)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--warmup-epochs", type=int, default=3)
    parser.add_argument("--patience", type=int, default=80)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--threshold", type=float, default=None, help="default: the best F1's on val")
    parser.add_argument("--latency", action="store_true", help="only time a batch-1 forward")
    parser.add_argument("--init", help="start from this state dict (a --save of a pre-training run)")
    parser.add_argument("--save", help="write the best epoch's state dict here (torch.save)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    model = CenterNet()
    if args.init:
        model.load_state_dict(torch.load(args.init))
    if args.latency:
        result = {"framework": f"torch {torch.__version__}", "img_size": args.img_size, "threads": args.threads,
                  "batch1_ms": latency_ms(model, args.img_size)}
        print(json.dumps(result) if args.json else result)
        return
    rng = np.random.default_rng(args.seed)
    x_train, y_train, _, _ = read_split(args.data, "train", args.img_size)
    x_val, y_val, _, _ = read_split(args.data, "val", args.img_size)
    x_test, _, test_truth, test_geometry = read_split(args.data, "test", args.img_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, eps=1e-7, weight_decay=args.weight_decay)
    steps_per_epoch = -(-len(x_train) // args.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(
        args.warmup_epochs * steps_per_epoch, args.epochs * steps_per_epoch))
    best, best_state, wait, epochs_run, start = math.inf, None, 0, 0, time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        order = rng.permutation(len(x_train))
        for begin in range(0, len(order), args.batch_size):
            index = order[begin:begin + args.batch_size]
            xb, yb = augment(x_train[index], y_train[index], rng)
            loss = centernet_loss(model(torch.from_numpy(xb)), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        with torch.no_grad():
            val_loss = float(centernet_loss(predict(model, x_val), y_val))
        epochs_run = epoch + 1
        if not args.json:
            print(f"epoch {epoch + 1}: loss {float(loss.detach()):.3f} val_loss {val_loss:.3f}", flush=True)
        if val_loss < best:
            best, wait = val_loss, 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            wait += 1
            if wait >= args.patience:
                break
    model.load_state_dict(best_state)
    if args.save:
        torch.save(best_state, args.save)
    threshold = args.threshold
    if threshold is None:  # as tinycnn's report: the lowest threshold within one plate of the best F1 on val
        x_val_photos, _, val_truth, val_geometry = read_split(args.data, "val", args.img_size)
        val = metrics_module.detection_metrics(detections(model, x_val_photos, val_geometry, args.img_size),
                                               val_truth, 0.3)
        threshold = metrics_module.best_f1_threshold(val["curve"], default=0.3,
                                                     tolerance=metrics_module.one_plate_tolerance(val["n_plates"]))
    outputs = predict(model, x_test)
    found = [decode(output, 0.01) for output in outputs]
    predictions = [(to_photo(boxes, geometry, args.img_size), scores)
                   for (boxes, scores), geometry in zip(found, test_geometry)]
    result = metrics_module.detection_metrics(predictions, test_truth, threshold)
    result.pop("curve")
    result.update({"framework": f"torch {torch.__version__}", "split": "test", "epochs_run": epochs_run,
                   "best_val_loss": best, "seconds": time.perf_counter() - start})
    print(json.dumps(result) if args.json else result)


if __name__ == "__main__":
    main()

"""The plates-box regressor in PyTorch, on the same split and recipe, to judge tinycnn's numbers.

    python -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch==2.13.0 numpy pillow
    /tmp/torchenv/bin/python benchmarks/torch_plates_box.py --data ../shared/data/plates --json

The same network as tasks/plates_models.PlateBoxRegressor (MobileNetV2-style: stem 32 s2, inverted residual
blocks (t, c, n, s) (1,16,1,1) (6,24,2,2) (6,32,1,2) (6,64,1,2) (6,128,1,1), 1x1 head to 256, batch norm with
Keras' momentum 0.9 / epsilon 1e-3, ReLU6, TensorFlow 'same' padding, global average pooling, dropout 0.2,
Linear 4 + sigmoid; He-normal convs, Glorot-uniform dense), the same letterbox, target (the largest plate),
augmentation (tasks/box_ops.augment_sample, loaded from its file: this venv has no numba), loss (MSE), Adam
1e-3, batch 16, best epoch on val_loss, early stopping patience 10; metrics on the test split in the
photos' pixels. Only torch, numpy and Pillow are needed.
"""
import argparse
import csv
import importlib.util
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn
from torch.nn import functional as F

BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 1, 2), (6, 64, 1, 2), (6, 128, 1, 1))
BOX_OPS = Path(__file__).resolve().parent.parent / "tasks" / "box_ops.py"


def load_box_ops():
    """tasks/box_ops.py as a module of its own (it needs only numpy and Pillow)."""
    spec = importlib.util.spec_from_file_location("box_ops", BOX_OPS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


box_ops = load_box_ops()


# ------------------------------------------------------------------------------------------ data

def read_split(root, split, img_size):
    """Letterboxed photos (N, 3, S, S), largest boxes normalised (N, 4), their pixel boxes and geometry."""
    rows = {}
    with open(Path(root) / "annotations" / f"{split}_annotations.csv", newline="") as file:
        for row in csv.DictReader(file):
            box = [float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax")]
            rows.setdefault(row["filename"], []).append(box)
    x, targets, truth, geometry = [], [], [], []
    for name, boxes in rows.items():
        with Image.open(Path(root) / split / name) as image:
            pixels = np.asarray(ImageOps.exif_transpose(image).convert("RGB"), np.float32) / 255
        boxes = np.asarray(boxes, np.float32)
        largest = boxes[np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))]
        canvas, scale, pad = box_ops.letterbox(pixels, img_size)
        x.append(canvas.transpose(2, 0, 1))
        targets.append(box_ops.boxes_to_letterbox(largest, scale, pad, size=img_size)[0])
        truth.append(largest)
        geometry.append((scale, pad, pixels.shape[1], pixels.shape[0]))
    return np.stack(x), np.stack(targets), np.stack(truth), geometry


def augment(x, y, rng):
    """box_ops.augment_sample on each letterboxed picture and its normalised box."""
    size = x.shape[2]
    out_x, out_y = np.empty_like(x), np.empty_like(y)
    for i in range(len(x)):
        image, box, _ = box_ops.augment_sample(x[i].transpose(1, 2, 0), y[i] * size, None, rng)
        out_x[i], out_y[i] = image.transpose(2, 0, 1), box[0] / size
    return out_x, out_y


# ------------------------------------------------------------------------------------------ model

def same_pad(x, kernel, stride):
    """TensorFlow's 'same' padding (extra pixel at the bottom/right), as tinycnn's layers pad."""
    pads = []
    for size in (x.shape[3], x.shape[2]):
        out = -(-size // stride)
        total = max((out - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class ConvBN(nn.Module):
    def __init__(self, cin, cout, kernel=1, stride=1, groups=1, act=True):
        super().__init__()
        self.kernel, self.stride, self.act = kernel, stride, act
        self.conv = nn.Conv2d(cin, cout, kernel, stride, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3, momentum=0.1)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_in", nonlinearity="relu")

    def forward(self, x):
        x = self.bn(self.conv(same_pad(x, self.kernel, self.stride)))
        return F.relu6(x) if self.act else x


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, t):
        super().__init__()
        hidden = cin * t
        self.expand = ConvBN(cin, hidden) if t != 1 else None
        self.depthwise = ConvBN(hidden, hidden, 3, stride, groups=hidden)
        self.project = ConvBN(hidden, cout, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return x + y if self.residual else y


class BoxRegressor(nn.Module):
    def __init__(self):
        super().__init__()
        layers, cin = [ConvBN(3, 32, 3, 2)], 32
        for t, c, n, s in BLOCKS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(ConvBN(cin, 256))
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(0.2)
        self.box = nn.Linear(256, 4)
        nn.init.xavier_uniform_(self.box.weight)
        nn.init.zeros_(self.box.bias)

    def forward(self, x):
        return torch.sigmoid(self.box(self.dropout(self.features(x).mean(dim=(2, 3)))))


# ------------------------------------------------------------------------------------------ run

def to_photo_boxes(normalised, geometry, img_size):
    """Normalised canvas boxes -> each photo's pixels (corners ordered, clipped), as tinycnn's task does."""
    out = []
    for box, (scale, pad, width, height) in zip(normalised, geometry):
        corners = box.reshape(2, 2)
        ordered = np.concatenate([corners.min(0), corners.max(0)])
        pixels = box_ops.boxes_from_letterbox(ordered, scale, pad, size=img_size)[0]
        out.append(np.clip(pixels, 0, [width, height, width, height]))
    return np.stack(out)


def predict(model, x, batch=64):
    model.eval()
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(x[i:i + batch])).numpy() for i in range(0, len(x), batch)])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    x_train, y_train, _, _ = read_split(args.data, "train", args.img_size)
    x_val, y_val, _, _ = read_split(args.data, "val", args.img_size)
    x_test, _, test_truth, test_geometry = read_split(args.data, "test", args.img_size)
    model = BoxRegressor()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, eps=1e-7)
    best, best_state, wait, epochs_run, start = math.inf, None, 0, 0, time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        order = rng.permutation(len(x_train))
        for begin in range(0, len(order), args.batch_size):
            index = order[begin:begin + args.batch_size]
            xb, yb = augment(x_train[index], y_train[index], rng)
            loss = F.mse_loss(model(torch.from_numpy(xb)), torch.from_numpy(yb))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        val_loss = float(np.mean((predict(model, x_val) - y_val) ** 2))
        epochs_run = epoch + 1
        if not args.json:
            print(f"epoch {epoch + 1}: val_loss {val_loss:.5f}", flush=True)
        if val_loss < best:
            best, wait = val_loss, 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            wait += 1
            if wait >= args.patience:
                break
    model.load_state_dict(best_state)
    boxes = to_photo_boxes(predict(model, x_test), test_geometry, args.img_size)
    ious = box_ops.box_iou(boxes, test_truth)
    result = {"framework": f"torch {torch.__version__}", "split": "test", "n_images": len(ious),
              "epochs_run": epochs_run, "best_val_loss": best, "seconds": time.perf_counter() - start,
              "mean_iou": float(ious.mean()), "share_iou_ge_0.5": float(np.mean(ious >= 0.5)),
              "share_iou_ge_0.75": float(np.mean(ious >= 0.75)),
              "mean_centre_error_px": float(box_ops.centre_error(boxes, test_truth).mean())}
    print(json.dumps(result) if args.json else result)


if __name__ == "__main__":
    main()

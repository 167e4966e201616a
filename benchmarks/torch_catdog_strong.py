"""The cat/dog `strong-ema` preset in PyTorch, on exactly the split and pixels tinycnn trains on.

The tinycnn run it mirrors (README, issue 19):

    python -m tinycnn.train catdog --data ../shared/data/catdog --model strong-ema --seed S
    # = --model strong --img-size 128 --epochs 45 --warmup 1 --crop 0.7 --hsv 0.02,0.2,0.2 --ema 0.998

Two steps, because PyTorch lives in its own environment (it is never a tinycnn dependency):

    # 1. with tinycnn's Python: decode and split the folder as that run does (uint8, RGB 128×128 stretched)
    python benchmarks/torch_catdog_strong.py export --data ../shared/data/catdog --out /tmp/cd-s0.npz --seed 0
    # 2. with a Python that has torch and numpy (no torchvision needed):
    python benchmarks/torch_catdog_strong.py train --arrays /tmp/cd-s0.npz --epochs 45 --seed 0

What matches (tasks/catdog.py, tasks/catdog_models.py, tinycnn/data/policies.py, augment.py, ema.py, optimizers.py):
- split: tinycnn's own `training_datasets` (stratified 90/10 seeded by --seed), the same decoded pixels;
- net: 4 × [conv3×3 'same' no bias (He-uniform) + BN (ε 1e-3, Keras momentum 0.9) + ReLU + max-pool 2]
  with 32-64-128-256 filters, global average pooling, dropout 0.3, Dense(1) (Glorot-uniform) logit, BCE;
- per image: random resized crop (area 0.7..1, aspect 3/4..4/3 log-uniform, ten tries then the whole image,
  tinycnn's pixel-centre bilinear sampling), HSV jitter (hue ±0.02 turns, S and V ×(1 ± 0.2)); per batch:
  flip (p 1/2), contrast ×U(0.85, 1.15) about the image mean, brightness ±0.15, clip to [0, 1];
- AdamW lr 1e-3, weight decay 1e-4 (decoupled, every parameter), ε 1e-7, batch 32; per step: a linear warm-up
  from 0 over the first epoch, then a cosine to 0 over the rest;
- EMA of the parameters (momentum 0.998, started at the first step's weights); before each validation the
  averaged weights get batch-norm statistics of their own: 16 batches of 32 un-augmented training images in
  training mode, each weighing the same (torch.optim.swa_utils.update_bn); the averages stay in at the end.
The augmentation runs one batch ahead in a background thread (tinycnn's runs in its data workers).
"""
import argparse
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

RECIPE = dict(lr=1e-3, weight_decay=1e-4, eps=1e-7, batch_size=32, warmup=1, crop=0.7, hsv=(0.02, 0.2, 0.2),
              brightness=0.15, contrast=0.15, dropout=0.3, bn_batches=16)


def export(args):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a file from a checkout
    from tinycnn.tasks.catdog import training_datasets
    settings = dict(img_size=args.img_size, grayscale=False, resize="stretch", batch_size=32)
    arrays = {}
    split = training_datasets(args.data, settings, args.val_split, args.seed, cache=False)
    for name, ds in zip(("train", "val"), split):
        batches = list(ds)  # images in [0, 1], whole numbers / 255: back to uint8 exactly
        arrays[f"x_{name}"] = np.concatenate([np.rint(x * 255) for x, _ in batches]).astype(np.uint8)
        arrays[f"y_{name}"] = np.concatenate([y for _, y in batches]).astype(np.int64)
    np.savez(args.out, class_names=np.array(ds.class_names), **arrays)
    print(f"wrote {args.out}: train {len(arrays['y_train'])}, val {len(arrays['y_val'])}, classes {ds.class_names}")


# ---------------------------------------------------------------------------------------------- augmentation

def _interpolate_rows(images, positions):
    """Bilinear along axis 1 of images (N, H, W, C) at per-image source rows positions (N, H_out)."""
    positions = np.clip(positions, 0, images.shape[1] - 1)
    below = np.floor(positions).astype(np.int64)
    above = np.minimum(below + 1, images.shape[1] - 1)
    weight = (positions - below).astype(np.float32)[:, :, None, None]
    batch = np.arange(len(images))[:, None]
    low = images[batch, below]
    return low + (images[batch, above] - low) * weight


def random_resized_crop(images, rng, min_scale, log_ratio=(math.log(3 / 4), math.log(4 / 3))):
    """Per image a window of area U(min_scale, 1) and aspect exp(U(log_ratio)) (ten tries, else the whole
    image) at a uniform place, sampled at the output's pixel centres and stretched back to (H, W)."""
    n, height, width, _ = images.shape
    windows = np.empty((n, 4))
    for i in range(n):
        windows[i] = 0.0, 0.0, height, width
        for _ in range(10):
            area = height * width * rng.uniform(min_scale, 1.0)
            aspect = math.exp(rng.uniform(*log_ratio))
            h, w = math.sqrt(area / aspect), math.sqrt(area * aspect)
            if h <= height and w <= width:
                windows[i] = rng.uniform(0, height - h), rng.uniform(0, width - w), h, w
                break
    top, left, h, w = windows.T
    rows = top[:, None] + (np.arange(height) + 0.5)[None] / height * h[:, None] - 0.5
    cols = left[:, None] + (np.arange(width) + 0.5)[None] / width * w[:, None] - 0.5
    out = _interpolate_rows(images, rows)
    return np.clip(_interpolate_rows(out.swapaxes(1, 2), cols).swapaxes(1, 2), 0.0, 1.0)


def hsv_jitter(images, rng, hue, saturation, value):
    """Per image: h += U(±hue) turns, s ×= U(1 ± saturation), v ×= U(1 ± value), in HSV (tinycnn's formulas)."""
    draws = np.array([[rng.uniform(-hue, hue), rng.uniform(1 - saturation, 1 + saturation),
                       rng.uniform(1 - value, 1 + value)] for _ in range(len(images))], np.float32)
    shift, s_factor, v_factor = (d[:, None, None] for d in draws.T)
    r, g, b = images[..., 0], images[..., 1], images[..., 2]
    v = images.max(axis=-1)
    delta = v - images.min(axis=-1)
    s = np.where(v > 0, delta / np.maximum(v, 1e-12), 0.0)
    safe = np.maximum(delta, 1e-12)
    h = np.where(v == r, (g - b) / safe, np.where(v == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    h = (np.where(delta > 0, (h / 6.0) % 1.0, 0.0) + shift) % 1.0
    s, v = np.clip(s * s_factor, 0, 1), np.clip(v * v_factor, 0, 1)
    rgb = [v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0) for k in ((n + 6.0 * h) % 6.0 for n in (5., 3., 1.))]
    return np.clip(np.stack(rgb, axis=-1), 0.0, 1.0).astype(np.float32)


def augment(images_uint8, rng):
    """A training batch (N, H, W, 3) uint8 -> float32 in [0, 1], NCHW, augmented as tinycnn's recipe does."""
    x = random_resized_crop(images_uint8.astype(np.float32) / np.float32(255), rng, RECIPE["crop"])
    x = hsv_jitter(x, rng, *RECIPE["hsv"])
    flipped = rng.random(len(x)) < 0.5
    x[flipped] = x[flipped, :, ::-1]
    factor = rng.uniform(1 - RECIPE["contrast"], 1 + RECIPE["contrast"], len(x)).astype(np.float32)[:, None, None, None]
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    x = (x - mean) * factor + mean
    x += rng.uniform(-RECIPE["brightness"], RECIPE["brightness"], len(x)).astype(np.float32)[:, None, None, None]
    return np.ascontiguousarray(np.clip(x, 0.0, 1.0).transpose(0, 3, 1, 2))


# ---------------------------------------------------------------------------------------------- training

def strong_model(nn, channels=3):
    layers, previous = [], channels
    for filters in (32, 64, 128, 256):
        conv = nn.Conv2d(previous, filters, 3, padding=1, bias=False)
        nn.init.kaiming_uniform_(conv.weight, nonlinearity="relu")  # He-uniform: U(±sqrt(6 / fan_in))
        layers += [conv, nn.BatchNorm2d(filters, eps=1e-3, momentum=0.1), nn.ReLU(), nn.MaxPool2d(2)]
        previous = filters
    dense = nn.Linear(previous, 1)
    nn.init.xavier_uniform_(dense.weight)
    nn.init.zeros_(dense.bias)
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(RECIPE["dropout"]), dense)


def learning_rate(step, steps_per_epoch, epochs):
    """Keras' CosineDecay(0, decay, warmup_target=lr, warmup_steps) at optimizer step `step` (0 first)."""
    warmup = RECIPE["warmup"] * steps_per_epoch
    if step < warmup:
        return RECIPE["lr"] * step / warmup
    decay = max(1, (epochs - RECIPE["warmup"]) * steps_per_epoch)
    return RECIPE["lr"] * 0.5 * (1 + math.cos(math.pi * min(step - warmup, decay) / decay))


def train(args):
    import torch
    from torch import nn

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng, aug_rng = np.random.default_rng(args.seed), np.random.default_rng(args.seed + 1)
    data = np.load(args.arrays)
    x_train, y_train = data["x_train"], torch.from_numpy(data["y_train"].astype(np.float32))
    x_val = torch.from_numpy(np.ascontiguousarray(data["x_val"].transpose(0, 3, 1, 2))).float() / 255
    y_val = torch.from_numpy(data["y_val"].astype(np.float32))
    model = strong_model(nn, x_train.shape[-1])
    params = list(model.parameters())
    buffers = sum(b.numel() for name, b in model.named_buffers() if "running" in name)
    print(f"{len(y_train)} train, {len(y_val)} val images of {x_train.shape[1:]}; "
          f"{sum(p.numel() for p in params):,} parameters (+ {buffers:,} batch-norm statistics)")
    optimizer = torch.optim.AdamW(params, lr=RECIPE["lr"], eps=RECIPE["eps"], weight_decay=RECIPE["weight_decay"])
    loss_fn = nn.BCEWithLogitsLoss()
    bs, ema = RECIPE["batch_size"], None
    steps_per_epoch, step, rows = math.ceil(len(y_train) / bs), 0, []
    started = time.perf_counter()
    with ThreadPoolExecutor(1) as pool:
        for epoch in range(args.epochs):
            start = time.perf_counter()
            model.train()
            order = rng.permutation(len(y_train))
            batches = [order[i:i + bs] for i in range(0, len(order), bs)]
            pending = pool.submit(augment, x_train[batches[0]], aug_rng)
            total, correct = 0.0, 0
            for k, index in enumerate(batches):
                xb = torch.from_numpy(pending.result())
                if k + 1 < len(batches):
                    pending = pool.submit(augment, x_train[batches[k + 1]], aug_rng)
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(step, steps_per_epoch, args.epochs)
                logits = model(xb)[:, 0]
                loss = loss_fn(logits, y_train[index])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                step += 1
                with torch.no_grad():
                    if args.ema and ema is None:
                        ema = [p.detach().clone() for p in params]
                    elif args.ema:
                        for average, p in zip(ema, params):  # m · average + (1 − m) · θ
                            average.lerp_(p.detach(), 1.0 - args.ema)
                total += loss.item() * len(index)
                correct += ((logits > 0) == (y_train[index] > 0.5)).sum().item()
            seconds = time.perf_counter() - start
            live = swap_in_averages(model, params, ema, x_train, rng) if args.ema else None
            model.eval()
            with torch.no_grad():
                logits = torch.cat([model(x_val[i:i + 256])[:, 0] for i in range(0, len(x_val), 256)])
                val_loss = loss_fn(logits, y_val).item()
                val_acc = ((logits > 0) == (y_val > 0.5)).float().mean().item()
            if live is not None and epoch + 1 < args.epochs:  # the averages stay in after the last epoch
                restore(model, params, *live)
            rows.append(val_acc)
            print(f"epoch {epoch + 1}: loss {total / len(order):.4f} accuracy {correct / len(order):.4f} "
                  f"val_loss {val_loss:.4f} val_accuracy {val_acc:.4f} ({len(order) / seconds:.0f} img/s)",
                  flush=True)
    best = int(np.argmax(rows))
    print(f"final val accuracy {rows[-1]:.4f} (best {rows[best]:.4f} at epoch {best + 1}); "
          f"{time.perf_counter() - started:.0f} s in all", flush=True)


def swap_in_averages(model, params, ema, x_train, rng):
    """The averaged weights into the model, with batch-norm statistics recomputed for them on 16 batches of 32
    un-augmented training images (cumulative average); returns the live (weights, statistics) to restore."""
    import torch
    weights = [p.detach().clone() for p in params]
    state = {name: b.clone() for name, b in model.named_buffers()}
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for p, average in zip(params, ema):
            p.copy_(average)
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average: each batch weighs the same
        picked = rng.permutation(len(x_train))[:RECIPE["bn_batches"] * RECIPE["batch_size"]]
        model.train()
        for i in range(0, len(picked), RECIPE["batch_size"]):
            batch = x_train[np.sort(picked[i:i + RECIPE["batch_size"]])]
            model(torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2))).float() / 255)
        for bn in bns:
            bn.momentum = 0.1
    return weights, state


def restore(model, params, weights, state):
    import torch
    with torch.no_grad():
        for p, w in zip(params, weights):
            p.copy_(w)
        buffers = dict(model.named_buffers())
        for name, value in state.items():
            buffers[name].copy_(value)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step", required=True)
    e = sub.add_parser("export")
    e.add_argument("--data", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--img-size", type=int, default=128)
    e.add_argument("--val-split", type=float, default=0.1)
    e.add_argument("--seed", type=int, default=0, help="tinycnn's --seed: the split's")
    t = sub.add_parser("train")
    t.add_argument("--arrays", required=True)
    t.add_argument("--epochs", type=int, default=45)
    t.add_argument("--img-size", type=int, default=None, help="check the arrays' size (set at export)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--ema", type=float, default=0.998, metavar="MOMENTUM")
    t.add_argument("--no-ema", dest="ema", action="store_const", const=0.0)
    args = parser.parse_args()
    if args.step == "train" and args.img_size is not None:
        size = np.load(args.arrays)["x_val"].shape[1]
        if size != args.img_size:
            parser.error(f"--img-size {args.img_size}: {args.arrays} holds {size}×{size} images (export --img-size)")
    export(args) if args.step == "export" else train(args)


if __name__ == "__main__":
    main()

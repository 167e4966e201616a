"""The tutorial's cat/dog recipe in PyTorch, on exactly the split and pixels tinycnn trains on.

Two steps, because PyTorch lives in its own environment (it is never a tinycnn dependency):

    # 1. with tinycnn's Python: decode and split the folder as `python -m tinycnn.train catdog --model seed` does
    python benchmarks/torch_catdog.py export --data ../shared/data/catdog --out /tmp/catdog-seed.npz
    # 2. with a Python that has torch (pip install torch numpy):
    python benchmarks/torch_catdog.py train --arrays /tmp/catdog-seed.npz --epochs 10 --seed 0

The split is tinycnn's stratified, seeded 90/10 split (seed 0), grayscale 100×100 stretched as the tutorial;
the net is Conv64-Pool-Conv64-Pool-Dense64-Dense1, BCE, Adam 1e-3, batch 32, Keras' default (Glorot-uniform)
initialisation so that both engines start from the same distribution.
"""
import argparse
import time

import numpy as np


def export(args):
    from tinycnn.data.folder import load_train_val
    train, val = load_train_val(args.data, 100, grayscale=True, resize="stretch", val_fraction=args.val_split,
                                seed=args.split_seed)
    np.savez(args.out, x_train=train.images, y_train=train.labels, x_val=val.images, y_val=val.labels)
    print(f"wrote {args.out}: train {len(train)}, val {len(val)}, classes {train.class_names}")


def train(args):
    import torch
    from torch import nn

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    data = np.load(args.arrays)
    to_nchw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))  # noqa: E731
    x_train, x_val = to_nchw(data["x_train"]), to_nchw(data["x_val"])
    y_train = torch.from_numpy(data["y_train"].astype(np.float32))
    y_val = torch.from_numpy(data["y_val"].astype(np.float32))
    side = x_train.shape[-1]
    flat = 64 * (((side - 2) // 2 - 2) // 2) ** 2
    model = nn.Sequential(nn.Conv2d(1, 64, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(64, 64, 3), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(flat, 64), nn.ReLU(), nn.Linear(64, 1))
    for m in model:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    loss_fn = nn.BCEWithLogitsLoss()
    for epoch in range(args.epochs):
        start = time.perf_counter()
        model.train()
        order = torch.randperm(len(x_train))
        total, correct = 0.0, 0
        for begin in range(0, len(order), args.batch_size):
            index = order[begin:begin + args.batch_size]
            logits = model(x_train[index])[:, 0]
            loss = loss_fn(logits, y_train[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(index)
            correct += ((logits > 0) == (y_train[index] > 0.5)).sum().item()
        seconds = time.perf_counter() - start
        model.eval()
        with torch.no_grad():
            logits = torch.cat([model(x_val[i:i + 256])[:, 0] for i in range(0, len(x_val), 256)])
            val_loss = loss_fn(logits, y_val).item()
            val_acc = ((logits > 0) == (y_val > 0.5)).float().mean().item()
        print(f"epoch {epoch + 1}: loss {total / len(order):.4f} accuracy {correct / len(order):.4f} "
              f"val_loss {val_loss:.4f} val_accuracy {val_acc:.4f} ({len(order) / seconds:.0f} img/s)", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step", required=True)
    e = sub.add_parser("export")
    e.add_argument("--data", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--val-split", type=float, default=0.1)
    e.add_argument("--split-seed", type=int, default=0)
    t = sub.add_parser("train")
    t.add_argument("--arrays", required=True)
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    export(args) if args.step == "export" else train(args)


if __name__ == "__main__":
    main()

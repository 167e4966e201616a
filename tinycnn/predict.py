"""python -m tinycnn.predict MODEL IMAGE... [--out DIR]: one line per image; a bad image gets a one-line
error and the others still run (exit status 1 if any failed)."""
import argparse
import sys

from .saving import read_metadata
from .train import task_module


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tinycnn.predict", description=__doc__)
    parser.add_argument("model", help="a .tcnn model file written by tinycnn.train")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--out", help="folder for annotated images (plate tasks)")
    parser.add_argument("--annotations", help="CSV of ground-truth boxes to draw beside the prediction (plates)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    task = read_metadata(args.model).get("task")
    if task is None:
        parser.error(f"{args.model} does not say which task it was trained for (not written by tinycnn.train)")
    return task_module(task).predict(args)


if __name__ == "__main__":
    sys.exit(main())

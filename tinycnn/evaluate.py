"""python -m tinycnn.evaluate MODEL --data DIR [--split test] [--json]: the model file knows its task."""
import argparse
import sys

from .saving import read_metadata
from .train import task_module


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tinycnn.evaluate", description=__doc__)
    parser.add_argument("model", help="a .tcnn model file written by tinycnn.train")
    parser.add_argument("--data", help="data folder (default: the built-in data of the model's task)")
    parser.add_argument("--split", default=None, help="which split to evaluate (tasks with train/val/test)")
    parser.add_argument("--json", action="store_true", help="print one JSON object with the metrics")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    task = read_metadata(args.model).get("task")
    if task is None:
        parser.error(f"{args.model} does not say which task it was trained for (not written by tinycnn.train)")
    return task_module(task).evaluate(args)


if __name__ == "__main__":
    sys.exit(main())

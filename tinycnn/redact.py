"""python -m tinycnn.redact MODEL IMAGE... --mode pixelate|blur|fill --out DIR: hide licence plates.

The command lives with the plate tasks (tasks/redact.py, installed as tinycnn.tasks.redact): this entry point
loads it by name when run, as `python -m tinycnn.train` loads a task, so that the engine imports no task.
"""
import importlib
import sys


def main(argv=None):
    return importlib.import_module("tinycnn.tasks.redact").main(argv)


if __name__ == "__main__":
    from .cli import run_cli
    sys.exit(run_cli("redact", main))

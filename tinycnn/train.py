"""python -m tinycnn.train TASK [options]: train one of the tutorial's tasks (see --help of each task).

    python -m tinycnn.train catdog                 # the built-in cat/dog images, the tutorial's net
    python -m tinycnn.train catdog --data DIR      # a folder per class
    python -m tinycnn.train plates-box | plates-seg
"""
import argparse
import importlib
import sys

TASKS = {
    "catdog": "tinycnn.tasks.catdog",
    "plates-box": "tinycnn.tasks.plates_box",
    "plates-seg": "tinycnn.tasks.plates_seg",
}


def task_module(name):
    return importlib.import_module(TASKS[name])


def available_tasks():
    """The tasks whose module imports (all of them in a complete install)."""
    found = {}
    for name in TASKS:
        try:
            found[name] = task_module(name)
        except ModuleNotFoundError as error:
            if not error.name or not error.name.startswith("tinycnn.tasks"):
                raise
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tinycnn.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="task", required=True, metavar="TASK")
    modules = available_tasks()
    for name, module in modules.items():
        task_parser = sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        module.add_train_arguments(task_parser)
    args = parser.parse_args(argv)
    return modules[args.task].train(args)


if __name__ == "__main__":
    from .cli import run_cli
    sys.exit(run_cli("train", main))

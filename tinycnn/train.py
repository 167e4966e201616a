"""python -m tinycnn.train TASK [options]: train one of the tutorial's tasks (see --help of each task).

    python -m tinycnn.train catdog                 # the built-in cat/dog images (--model seed: the tutorial's net)
    python -m tinycnn.train catdog --data DIR      # a folder per class
    python -m tinycnn.train plates-box | plates-seg
"""
import argparse
import sys

from .task_names import TASKS, available_tasks, task_module  # noqa: F401  (TASKS, task_module: public here too)


def main(argv=None):
    from .cli import Parser  # one error line `tinycnn train TASK: error: ...` (status 2), for the tasks' options too
    parser = Parser("train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="task", required=True, metavar="TASK")
    modules = available_tasks()
    for name, module in modules.items():
        task_parser = sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        module.add_train_arguments(task_parser)
    args = parser.parse_args(argv)
    return modules[args.task].train(args)


def console():
    """The `tinycnn-train` console script (pyproject.toml): main through run_cli, so a user's mistake is one
    line `tinycnn train: error: ...` with status 2, as for `python -m tinycnn.train`."""
    from .cli import run_cli
    return run_cli("train", main)


if __name__ == "__main__":
    sys.exit(console())

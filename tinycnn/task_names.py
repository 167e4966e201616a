"""The tutorial's tasks by their command-line names, found by module name (the engine imports no task).

    python -m tinycnn.train catdog | plates-box | plates-seg
"""
import importlib

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

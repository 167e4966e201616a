"""Every task module follows tasks/common.py's TaskModule protocol, and trains through the shared skeleton
(a Training subclass whose `run` is common.Training.run)."""
import inspect

import pytest

from tinycnn.tasks.common import TaskModule, Training
from tinycnn.train import TASKS, task_module

PROTOCOL = [name for name, member in vars(TaskModule).items() if inspect.isfunction(member) and not name.startswith("_")]


@pytest.mark.parametrize("name", sorted(TASKS))
def test_task_module_follows_the_protocol(name):
    module = task_module(name)
    assert module.TASK == name
    assert PROTOCOL == ["add_train_arguments", "train", "evaluate", "predict"]
    for function in PROTOCOL:
        assert list(inspect.signature(getattr(module, function)).parameters) == \
            list(inspect.signature(getattr(TaskModule, function)).parameters)[1:], function


@pytest.mark.parametrize("name", sorted(TASKS))
def test_task_trains_through_the_shared_skeleton(name):
    module = task_module(name)
    trainings = [c for c in vars(module).values()
                 if inspect.isclass(c) and issubclass(c, Training) and c.__module__ == module.__name__]
    assert len(trainings) == 1
    training = trainings[0]
    assert training.task == name and training.run is Training.run
    assert training.monitor.startswith("val_") and training.main_metric

"""The training engine moved to tinycnn/trainer.py (Trainer: compile, fit, evaluate, predict and the
overridable train_step / test_step / predict_step of every tinycnn.Model). This module keeps the old names
importable: `tinycnn.training.TrainingError`, `History`, `TrainingAPI` (now Trainer)."""
from .callbacks import History  # noqa: F401
from .trainer import Trainer, TrainingError  # noqa: F401

TrainingAPI = Trainer

"""tinycnn.optim: the optimizers under PyTorch's module name. They live in tinycnn/optimizers.py (one class
per optimizer, made with the parameters as here or without them as Keras does):

    opt = optim.Adam(model.parameters(), lr=1e-3)
    sched = optim.CosineWithWarmup(opt, total_steps=1000, warmup_steps=100)
"""
from .optimizers import SGD, Adam, AdamW, CosineWithWarmup, LRSchedule, Optimizer, StepLR  # noqa: F401

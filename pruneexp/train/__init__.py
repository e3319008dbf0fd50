"""Training: the loop, optimizers and LR schedules, evaluation, durations."""

from pruneexp.train.loop import TrainResult, TrainState, epoch_order, evaluate_split, steps_per_epoch, train, training_batches
from pruneexp.train.sparsifier import Sparsifier, reset_optimizer_state
from pruneexp.train.task import TASKS, Task

__all__ = ["TASKS", "Sparsifier", "Task", "TrainResult", "TrainState", "epoch_order", "evaluate_split",
           "reset_optimizer_state", "steps_per_epoch", "train", "training_batches"]

"""Training: the loop, optimizers and LR schedules, evaluation, durations."""

from pruneexp.train.evaluate import evaluate
from pruneexp.train.loop import TrainResult, TrainState, epoch_order, steps_per_epoch, train

__all__ = ["TrainResult", "TrainState", "epoch_order", "evaluate", "steps_per_epoch", "train"]

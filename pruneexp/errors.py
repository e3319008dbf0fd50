"""The one exception type users see: a clear, one-paragraph message and no traceback."""


class PruneexpError(Exception):
    """A user-facing error: bad config, unknown name, missing data. The CLI prints its
    message as one paragraph and exits non-zero; anything else is a bug and keeps its traceback."""


class TrainingDiverged(PruneexpError):
    """A loss or weight became NaN or infinite: the run stops (and is marked `failed`) instead of
    pruning on meaningless scores. The message names the phase and the step."""

    def __init__(self, phase: str, step: int, what: str):
        self.phase, self.step, self.what = phase, step, what
        super().__init__(f"Training diverged in phase '{phase}' at step {step}: {what} is not finite. "
                         "Lower train.lr (or add warm-up / gradient clipping) and run again; nothing was pruned on it.")

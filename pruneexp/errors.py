"""The one exception type users see: a clear, one-paragraph message and no traceback."""


class PruneexpError(Exception):
    """A user-facing error: bad config, unknown name, missing data. The CLI prints its
    message as one paragraph and exits non-zero; anything else is a bug and keeps its traceback."""

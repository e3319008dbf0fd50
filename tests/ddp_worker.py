"""One rank of a run over several processes, for tests/test_distributed.py: `python -m pruneexp`
itself, with a fault that the test may inject into one rank (torchrun's launcher starts this file
once per rank; pruneexp.distributed.launch(..., entrypoint=this file)).

PRUNEEXP_TEST_KILL="RANK PHASE RUN_DIR": that rank SIGKILLs itself right after the first mid-training
checkpoint of PHASE, once rank 0's checkpoint file is on disk in RUN_DIR (so a rerun has a
checkpoint to resume from), as a preempted or crashed process dies: no cleanup, no message."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from pruneexp.cli import main


def inject(rank: str, phase: str, run_dir: str) -> None:
    from pruneexp.train.checkpoint import Checkpoint

    if os.environ.get("RANK") != rank:
        return
    real = Checkpoint.write

    def write(self, state):
        real(self, state)  # a rank other than 0 saves nothing (its store is unbound)
        if Path(self.name).name.startswith(phase):
            deadline = time.monotonic() + 60
            while not (Path(run_dir) / self.name).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGKILL)

    Checkpoint.write = write


if __name__ == "__main__":
    if os.environ.get("PRUNEEXP_TEST_KILL"):
        inject(*os.environ["PRUNEEXP_TEST_KILL"].split(" ", 2))
    main(sys.argv[1:])

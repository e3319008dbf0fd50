"""Results on disk: run directories named by config hash, atomic writes, resume. Knows records
and files, never models."""

from pruneexp.results.hashing import run_hash
from pruneexp.results.store import RunStore, atomic_write

__all__ = ["RunStore", "atomic_write", "run_hash"]

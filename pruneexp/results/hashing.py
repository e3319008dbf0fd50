"""Runs are named by the hash of their resolved hyperparameters (OpenLTH's habit)."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable, Mapping


def drop_keys(tree: Mapping[str, Any], dotted: Iterable[str]) -> dict[str, Any]:
    """A deep copy of a nested dict without the given dotted keys ("dataset.root")."""
    out = json.loads(json.dumps(tree))
    for key in dotted:
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    return out


def run_hash(resolved: Mapping[str, Any], ignore: Iterable[str] = ()) -> str:
    """First 12 hex digits of sha256 over the canonical JSON of the resolved config, with the keys
    that do not change results (output paths, display) left out."""
    canonical = json.dumps(drop_keys(resolved, ignore), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]

"""The method schemas as the registries declare them: Hydra's ConfigStore registration, and the
reading of a recorded config that needs to know which options a method has.

A method (model, criterion, schedule, regularizer) owns its schema dataclass and registers it with
its registry (`@SCHEDULES.register("dst", config=DstConfig)`); `config.py` holds the run schema and
each group's base schema and sits below the registries (they import it), so whoever reads the
registries' schemas lives here, above them: `cli`, `bench`, `reproduce` and `report` import this
module, `config.py` never does (DESIGN.md, "Imports flow one way").
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hydra.core.config_store import ConfigStore

from pruneexp.config import BASE_SCHEMAS, Config, implied
from pruneexp.models import MODELS
from pruneexp.pruning.criteria import CRITERIA
from pruneexp.regularizers import REGULARIZERS
from pruneexp.schedules import SCHEDULES

# The registry of each method group, by group name: the one group -> registry mapping that
# register_configs, has_key and validate.typed_config read.
METHOD_REGISTRIES: dict[str, Any] = {"model": MODELS, "criterion": CRITERIA, "schedule": SCHEDULES, "regularizer": REGULARIZERS}


def method_schema(group: str, name: str) -> type:
    """The schema dataclass of method `name` in `group`: its own, or the group's base schema."""
    return METHOD_REGISTRIES[group].meta(name).get("config") or BASE_SCHEMAS[group]


def has_key(group: str, name: Any, leaf: str) -> bool:
    """Whether the method `name` of a method group (model, criterion, schedule, regularizer) has the
    option `leaf` in its own schema; True for the other groups and for a name no registry knows (a
    run of a method since removed reads as it did). A key is filled in only where it can exist, so a
    report does not label a group-lasso run with L0's `ema` or a one-shot run with RigL's `sparse_init`."""
    if group not in METHOD_REGISTRIES or not isinstance(name, str) or name not in METHOD_REGISTRIES[group]:
        return True
    return leaf in {f.name for f in dataclasses.fields(method_schema(group, name))}


def comparable_view(resolved: dict[str, Any]) -> dict[str, Any]:
    """The resolved config with every key the run hash treats as implied made explicit, for telling
    runs apart in reports: method nodes completed with LEGACY_HASH_DEFAULTS, HASH_NEUTRAL keys a run
    predates filled in at their neutral value where the run's method has them (has_key), and a
    missing regularizer node read as {name: none} (a "none" node's other keys dropped). Two runs
    of one setup written before and after a key was added then read alike (as they hash alike)."""
    return implied(resolved, "filled", has_key)


def register_configs() -> None:
    """Store the run schema and every method's own schema in Hydra's ConfigStore: `<name>_schema`
    in the method's group, which its YAML names first in its defaults (Hydra's schema pattern)."""
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    for group, registry in METHOD_REGISTRIES.items():
        cs.store(group=group, name="schema", node=BASE_SCHEMAS[group])
        for name in registry:
            cs.store(group=group, name=f"{name}_schema", node=method_schema(group, name))

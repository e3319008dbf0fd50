"""Name -> object registries (timm style): `@MODELS.register("conv4")`, `MODELS.get("conv4")`."""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import Any, Callable, Generic, Iterator, TypeVar

from pruneexp.errors import PruneexpError

T = TypeVar("T")


def import_modules(package: str) -> None:
    """Import every module of `package` (a package's modules register their entries on import), so
    adding an entry is adding a file: no import list to edit."""
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")


class Registry(Generic[T]):
    """A named collection of factories (datasets, models, criteria, schedules, hardware forms).

    Each entry may carry metadata (e.g. the granularities a criterion can score), read with `meta`.
    Unknown names raise a PruneexpError listing the known ones and the closest match.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **meta: Any) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = obj
            self._meta[name] = meta
            return obj

        return add

    def get(self, name: str) -> T:
        if name not in self._items:
            raise PruneexpError(self.unknown_message(name))
        return self._items[name]

    def meta(self, name: str) -> dict[str, Any]:
        self.get(name)
        return self._meta[name]

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, self.names(), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        return f"Unknown {self.kind} '{name}'.{hint} Known {self.kind}s: {', '.join(self.names())}."

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

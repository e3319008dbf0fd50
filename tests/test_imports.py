"""The house (DESIGN.md, "Imports flow one way"): every import of every pruneexp module, read from
its source with ast (function-level lazy imports and `import_modules(__name__)` included), forms no
circle and runs from a floor down to a lower or the same one, never up:

    cli -> runner -> schedules -> (regularizers, train, pruning, measure) -> (models, data) -> config

with report, reproduce and bench above runner; results and report reading records, not models;
io.py, errors.py and fetch.py leaves. A new module must be given its floor here."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "pruneexp"

# Floors, lowest first: a module may import its own floor or lower ones. The first prefix that
# matches a module's dotted name gives its floor.
FLOORS = {
    # leaves, the registry class, local Hugging Face files (models.hf and data.tokens share them) and the model fetch
    0: ("pruneexp.errors", "pruneexp.io", "pruneexp.registry", "pruneexp.hf_local", "pruneexp.fetch",
        "pruneexp.distributed"),  # torch.distributed: which rank, the process group, its collectives
    1: ("pruneexp.config", "pruneexp.results", "pruneexp.plots"),  # the run schema; records and their pictures
    2: ("pruneexp.models", "pruneexp.data"),
    3: ("pruneexp.pruning", "pruneexp.train", "pruneexp.measure", "pruneexp.regularizers", "pruneexp.loggers"),
    4: ("pruneexp.schedules",),
    5: ("pruneexp.conf_store", "pruneexp.validate"),  # read configs against the method registries
    6: ("pruneexp.runner",),
    7: ("pruneexp.report", "pruneexp.reproduce", "pruneexp.bench"),
    8: ("pruneexp.cli",),
    9: ("pruneexp.__main__",),
}
LEAVES = ("pruneexp.io", "pruneexp.errors", "pruneexp.fetch")
# What knows records and files only: it imports no model, data, training or pruning code itself.
RECORDS_ONLY = ("pruneexp.results", "pruneexp.report", "pruneexp.plots")
MODEL_SIDE = ("pruneexp.models", "pruneexp.data", "pruneexp.pruning", "pruneexp.train", "pruneexp.measure",
              "pruneexp.regularizers", "pruneexp.schedules", "pruneexp.runner")


def modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package's __init__)."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if package else parts)] = (path, package)
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the pruneexp modules it imports anywhere in its source (module level, in functions,
    under `if`): `import a.b`, `from a import b` (b a module or a name in a), relative imports, and
    the registries' `import_modules(__name__)` (the package imports each of its modules). An import
    of one's own package (or its parents) is left out: Python runs a package's __init__ before any
    of its modules anyway, and the registries' `import_modules` runs after the registry exists."""
    mods = modules()

    def owner(name: str) -> str:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name

    graph: dict[str, set[str]] = {}
    for name, (path, package) in mods.items():
        here = name if package else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(owner(a.name) for a in node.names if a.name.startswith("pruneexp"))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([base] if base else []))
                if base.startswith("pruneexp"):
                    found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in mods else owner(base) for a in node.names)
            elif (isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) in
                  ("import_modules", "import_module") and node.args):
                arg = node.args[0]
                if isinstance(arg, ast.Name) and arg.id == "__name__" and package:  # a registry loading its package
                    found.update(m for m in mods if m.startswith(name + ".") and "." not in m[len(name) + 1:])
                elif isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.startswith("pruneexp"):
                    found.add(owner(arg.value))
        ancestors = {".".join(name.split(".")[:i]) for i in range(1, len(name.split(".")))}
        graph[name] = found - ancestors - {name, ""}
    return graph


def floor(name: str) -> int:
    for level, prefixes in FLOORS.items():
        if name == "pruneexp" or any(name == p or name.startswith(p + ".") for p in prefixes):
            return 0 if name == "pruneexp" else level
    raise AssertionError(f"{name} has no floor in tests/test_imports.py FLOORS: give it one (DESIGN.md's house)")


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `graph` (as a path that returns to its start), or None."""
    state: dict[str, int] = {}  # 1 on the path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def package(name: str) -> str:
    """The part of the house a module belongs to: pruneexp.pruning.criteria.magnitude -> pruneexp.pruning."""
    return ".".join(name.split(".")[:2])


GRAPH = import_graph()


def test_the_import_graph_is_read_from_the_source():
    """The reader sees what a newcomer reading the files sees: lazy imports in functions, relative
    imports, `from package import module` and the registries' import_modules."""
    assert "pruneexp.conf_store" in GRAPH["pruneexp.cli"]  # inside run_command
    assert "pruneexp.pruning.masks" in GRAPH["pruneexp.measure.flops"]
    assert "pruneexp.schedules.dst" in GRAPH["pruneexp.schedules"]  # import_modules(__name__)
    assert "pruneexp.schedules.context" in GRAPH["pruneexp.schedules.dst"]
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"] and cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circle_between_modules():
    assert cycle(GRAPH) is None, f"import circle: {' -> '.join(cycle(GRAPH))}"


def test_no_import_circle_between_parts_of_the_house():
    """Parts on one floor (pruning, train, measure, regularizers) may use each other one way only."""
    parts: dict[str, set[str]] = {}
    for name, deps in GRAPH.items():
        parts.setdefault(package(name), set()).update(package(d) for d in deps if package(d) != package(name))
    assert cycle(parts) is None, f"import circle between parts: {' -> '.join(cycle(parts))}"


def test_imports_run_down_the_floors():
    upward = sorted(f"{m} (floor {floor(m)}) imports {d} (floor {floor(d)})"
                    for m, deps in GRAPH.items() for d in deps if floor(d) > floor(m))
    assert not upward, "imports from a lower floor to a higher one:\n" + "\n".join(upward)


@pytest.mark.parametrize("leaf", LEAVES)
def test_leaves_import_nothing_of_pruneexp(leaf):
    assert not GRAPH[leaf], f"{leaf} is a leaf that anything may import; it imports {sorted(GRAPH[leaf])}"


def test_nothing_imports_cli():
    users = sorted(m for m, deps in GRAPH.items() if "pruneexp.cli" in deps and m != "pruneexp.__main__")
    assert not users, f"{users} import pruneexp.cli"


def test_records_code_imports_no_model_code():
    """results, report and plots read records and files; they import no model, data, training or
    pruning code themselves (report reads method schemas through conf_store's comparable_view)."""
    bad = sorted(f"{m} imports {d}" for m, deps in GRAPH.items() if m.startswith(RECORDS_ONLY)
                 for d in deps if d.startswith(MODEL_SIDE))
    assert not bad, "\n".join(bad)

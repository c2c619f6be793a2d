"""The layout of the code: rooms by stage of the data flow, imports from bottom to top, no import cycles.

``FLOORS`` is the declared order of the rooms, bottom to top. A module may import from its own room
and from the rooms of lower floors; rooms that share a floor do not import each other. Every import
counts, function-local ones included, so a lazy import cannot hide an upward dependency or a cycle.
"""

import ast
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("harness", "explainers", "scorers", "results")

FLOORS: tuple[tuple[str, ...], ...] = (
    ("harness",),  # ground floor: errors, storage, paths, progress (log lines), records
    ("harness.subject",),  # model and hooks, embedded model, corpus, activations
    ("harness.dictionaries",),  # dictionary and encode/decode, formats, training, neuron pool
    ("harness.index",),  # index state, store, builder, sampling of contexts
    ("harness.llm", "harness.compare"),  # LLM access | correlation and splitting
    ("harness.steering",),  # clamps in the forward pass, steered generation, feature search
    ("explainers", "scorers"),
    ("results",),
    ("harness.config",),  # one config file -> typed records
    ("harness.run",),  # the stages of a run and the runner
    ("harness.api",),  # the function behind every CLI verb
    ("harness.cli",),
)
GROUND_MODULES = {"__init__", "errors", "storage", "paths", "progress", "records"}
MAX_TOP_LEVEL_FILES = 10


def floor_of(room: str) -> int:
    """Return the floor of a declared room; KeyError for an undeclared one."""
    for number, rooms in enumerate(FLOORS):
        if room in rooms:
            return number
    raise KeyError(room)


def room_of(module: str) -> str:
    """Return the room of a module name, e.g. ``harness.run.runner`` -> ``harness.run``; KeyError if it has none."""
    parts = module.split(".")
    if parts[0] != "harness":
        return parts[0]
    if len(parts) == 1 or parts[1] in GROUND_MODULES:
        return "harness"
    room = f"harness.{parts[1]}"
    floor_of(room)  # raises for a room nobody declared
    return room


def project_modules() -> dict[str, Path]:
    """Return {module name: path} of every module of the project's Python packages."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Return the project modules ``path`` imports anywhere in its body (``from A import b`` counts A.b when it is a module)."""
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import (write the absolute module path)"
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:  # import a.b.c of a module: the deepest project module named
                name = name.rpartition(".")[0]
            if name:
                targets.add(name)
    return targets


def import_graph() -> dict[str, set[str]]:
    """Return {module: project modules it imports} over the whole project."""
    modules = project_modules()
    known = set(modules)
    return {name: imports_of(path, known) - {name} for name, path in modules.items()}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Return one line per import from a higher floor or a neighbouring room on the same floor."""
    problems = []
    for module, targets in sorted(graph.items()):
        room = room_of(module)
        for target in sorted(targets):
            other = room_of(target)
            if other != room and floor_of(other) >= floor_of(room):
                where = "a room on the same floor" if floor_of(other) == floor_of(room) else "a higher floor"
                problems.append(f"{module} ({room}) imports {target} ({other}, {where})")
    return problems


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Return the strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_every_module_is_in_a_declared_room():
    unplaced = []
    for module in project_modules():
        try:
            room_of(module)
        except KeyError:
            unplaced.append(module)
    assert not unplaced, f"modules outside the declared rooms (add them to FLOORS or move them): {unplaced}"


def test_imports_run_from_bottom_to_top():
    problems = upward_imports(import_graph())
    assert not problems, "\n".join(problems)


def test_no_import_cycles():
    cycles = import_cycles(import_graph())
    assert not cycles, f"modules that import each other in a cycle: {cycles}"


def test_the_checks_catch_an_upward_import_and_a_cycle():
    graph = {
        "harness.subject.model": {"harness.run.runner", "harness.errors"},
        "harness.run.runner": {"harness.subject.model"},
        "harness.llm.client": {"harness.compare.correlation"},
        "harness.errors": set(),
        "harness.compare.correlation": set(),
    }
    assert upward_imports(graph) == [
        "harness.llm.client (harness.llm) imports harness.compare.correlation (harness.compare, a room on the same floor)",
        "harness.subject.model (harness.subject) imports harness.run.runner (harness.run, a higher floor)",
    ]
    assert import_cycles(graph) == [["harness.run.runner", "harness.subject.model"]]
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_harness_top_level_stays_small():
    files = sorted(path.name for path in (ROOT / "harness").glob("*.py"))
    assert len(files) <= MAX_TOP_LEVEL_FILES, f"{len(files)} modules at harness/ top level: {files}"
    rooms = {room for floor in FLOORS for room in floor if room.startswith("harness.")}
    for directory in (ROOT / "harness").iterdir():
        if (directory / "__init__.py").exists():
            assert f"harness.{directory.name}" in rooms, f"harness/{directory.name}/ is not a declared room"


# A work item's number ("the word issue, then a number") or "later ..." belongs to the tracker, not to the code or docs.
WORK_ITEM = re.compile(r"\biss" r"ues?[ -]?#?\d|\blater iss" r"ues\b", re.IGNORECASE)


def test_no_reference_to_work_items():
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=False)
    paths = [ROOT / line for line in listed.stdout.splitlines()] if listed.returncode == 0 else list(ROOT.rglob("*"))
    found = []
    for path in paths:
        if not path.is_file() or ".git" in path.parts or path.suffix not in {".py", ".md", ".txt", ".yaml", ".yml", ".toml", ".json", ""}:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if WORK_ITEM.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert not found, "\n".join(found)

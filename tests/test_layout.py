"""The package's shape, read from its source with `ast`: no import cycle, a small top level,
each package importing only what its docstring allows, no two classes of one name, and no two
public constants of one name in one package.

Module-level imports are what runs when a module loads; imports under `if TYPE_CHECKING:`
are left out (they never run), and imports inside functions are collected apart: they are
not part of the load-time graph, yet a package rule still holds for them, because a lazy
import is as much a dependency as an eager one."""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "dispatch_matrix"
MAX_TOP_LEVEL_MODULES = 6


@dataclass(frozen=True)
class Rule:
    """What a package may import: `only` lists every package allowed (None: any), `never`
    those forbidden. A package may always import itself."""

    only: frozenset[str] | None = None
    never: frozenset[str] = frozenset()

    def allows(self, package: str) -> bool:
        """Whether a module of the ruled package may import one of `package`."""
        if package in self.never:
            return False
        return self.only is None or package in self.only


def _only(*packages: str) -> Rule:
    return Rule(only=frozenset(packages))


def _never(*packages: str) -> Rule:
    return Rule(never=frozenset(packages))


# The rules each package's `__init__` docstring states, as data.
RULES: Mapping[str, Rule] = {
    "core": _only(),
    "store": _only("core"),
    "permissions": _only("core"),
    "sandbox": _only("core", "store"),
    "toolbox": _only("core", "store", "permissions", "sandbox"),
    "matrix": _only("core", "store"),
    "identity": _only("core", "store", "matrix"),
    "agent": _never("matrix", "queue", "app", "cli", "identity", "voice", "schedule"),
    "queue": _never("app", "cli", "identity", "voice", "schedule"),
    "voice": _only("core", "store", "matrix", "queue"),
    "schedule": _only("core", "store", "queue", "agent", "toolbox"),
    "connectors": _only("core", "store", "permissions", "toolbox"),
    "app": _never("cli"),
}


@dataclass
class Imports:
    """One module's imports of our own modules, by when they run."""

    at_load: set[str] = field(default_factory=set)
    in_functions: set[str] = field(default_factory=set)
    for_types: set[str] = field(default_factory=set)

    def every(self) -> set[str]:
        """Every module imported, whenever (or whether) the import runs."""
        return self.at_load | self.in_functions | self.for_types


def module_name(path: Path) -> str:
    """`dispatch_matrix/queue/worker.py` → `dispatch_matrix.queue.worker` (a package's
    `__init__` is named by its package)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """Every module of the package, by name."""
    return {module_name(p): p for p in sorted((ROOT / PACKAGE).rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


LOAD, FUNCTION, TYPES = "load", "function", "types"


def _walk(nodes: Iterable[ast.stmt], when: str) -> Iterator[tuple[ast.stmt, str]]:
    """Each import statement with when it runs: at load, inside a function, or never (a
    type checker's import)."""
    for node in nodes:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, when
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _walk(node.body, TYPES)
            yield from _walk(node.orelse, when)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield from _walk(node.body, FUNCTION if when == LOAD else when)
        else:
            # Class bodies, try, with, if, loops: all run when their block runs.
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    yield from _walk([child], when)


def _targets(node: ast.Import | ast.ImportFrom, here: str, known: set[str]) -> Iterator[str]:
    """The modules of ours an import statement loads: `from a import b` is module `a.b`
    when that exists, else `a`."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            name = alias.name
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                yield name
        return
    base = node.module or ""
    if node.level:
        anchor = here.split(".")
        is_package = (ROOT / Path(*anchor) / "__init__.py").exists()
        anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
        base = ".".join([*anchor, *([base] if base else [])])
    if base not in known:
        return
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        yield sub if sub in known else base


def import_graph() -> dict[str, Imports]:
    """Each module's imports of our own modules."""
    found = modules()
    known = set(found)
    graph: dict[str, Imports] = {}
    for name, path in found.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        imports = Imports()
        sets = {LOAD: imports.at_load, FUNCTION: imports.in_functions, TYPES: imports.for_types}
        for node, when in _walk(tree.body, LOAD):
            assert isinstance(node, ast.Import | ast.ImportFrom)
            for target in _targets(node, name, known):
                if target != name:
                    sets[when].add(target)
        graph[name] = imports
    return graph


def find_cycle(edges: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One cycle of the directed graph as its path (first node repeated at the end), or
    None when there is none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def package_of(module: str) -> str:
    """`dispatch_matrix.queue.worker` → `queue`; a top-level module is its own package
    (`dispatch_matrix.cli` → `cli`); the root package is `""`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def upward_imports(graph: Mapping[str, Imports]) -> list[str]:
    """Every import that breaks its package's rule, as `module → module (when)`."""
    broken = []
    for name, imports in sorted(graph.items()):
        rule = RULES.get(package_of(name))
        if rule is None:
            continue
        by_when = (
            (LOAD, imports.at_load),
            (FUNCTION, imports.in_functions),
            (TYPES, imports.for_types),
        )
        for when, targets in by_when:
            for target in sorted(targets):
                theirs = package_of(target)
                if theirs not in ("", package_of(name)) and not rule.allows(theirs):
                    broken.append(f"{name} → {target} ({when})")
    return broken


def class_names() -> dict[str, list[str]]:
    """Every class defined anywhere in the package, by name: where each is defined."""
    where: dict[str, list[str]] = defaultdict(list)
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                where[node.name].append(name)
    return where


def constant_names() -> dict[tuple[str, str], list[str]]:
    """Every public module-level constant (an upper-case name assigned at the top of a
    module), by package and name: the modules that define it."""
    where: dict[tuple[str, str], list[str]] = defaultdict(list)
    for name, path in modules().items():
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.AnnAssign):
                targets = [node.target]
            else:
                continue
            for constant in [target.id for target in targets if isinstance(target, ast.Name)]:
                if constant.isupper() and not constant.startswith("_"):
                    where[(package_of(name), constant)].append(name)
    return where


# --- the checker itself, on small graphs ------------------------------------------------


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": ["b"], "b": ["c"], "c": []}, None),
        ({"a": ["b"], "b": ["a"]}, ["a", "b", "a"]),
        ({"a": ["b"], "b": ["c"], "c": ["b"]}, ["b", "c", "b"]),
        ({"a": ["a"]}, ["a", "a"]),
        ({"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": []}, None),
    ],
)
def test_find_cycle(edges: dict[str, list[str]], expected: list[str] | None) -> None:
    assert find_cycle(edges) == expected


@pytest.mark.parametrize(
    ("rule", "package", "allowed"),
    [
        (_only(), "store", False),
        (_only("core"), "core", True),
        (_only("core"), "store", False),
        (_never("matrix"), "matrix", False),
        (_never("matrix"), "queue", True),
        (Rule(), "anything", True),
    ],
)
def test_rule_allows(rule: Rule, package: str, allowed: bool) -> None:
    assert rule.allows(package) is allowed


_SOURCE = """
import a
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    import b
else:
    import c
try:
    import d
except ImportError:
    pass
class K:
    import e
    def m(self):
        import f
async def g():
    if TYPE_CHECKING:
        import h
    import i
"""


def test_each_import_is_sorted_by_when_it_runs() -> None:
    found = {
        alias.name: when
        for node, when in _walk(ast.parse(_SOURCE).body, LOAD)
        for alias in node.names
        if alias.name != "TYPE_CHECKING"
    }
    assert found == {
        "a": LOAD,
        "b": TYPES,
        "c": LOAD,
        "d": LOAD,
        "e": LOAD,
        "f": FUNCTION,
        "h": TYPES,
        "i": FUNCTION,
    }


def test_graph_sees_imports_by_when_they_run() -> None:
    graph = import_graph()
    # queue/__init__ imports the worker at load; agent/__init__ names the engine for types
    # only (it loads it on first use); the CLI imports its commands inside functions.
    assert "dispatch_matrix.queue.worker" in graph["dispatch_matrix.queue"].at_load
    assert "dispatch_matrix.agent.engine" in graph["dispatch_matrix.agent"].for_types
    assert "dispatch_matrix.identity.admin" in graph["dispatch_matrix.cli"].in_functions


# --- the package ------------------------------------------------------------------------


def test_no_import_cycle_at_load() -> None:
    graph = import_graph()
    cycle = find_cycle({name: imports.at_load for name, imports in graph.items()})
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])


def test_top_level_is_small() -> None:
    top = sorted(p.name for p in (ROOT / PACKAGE).glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


def test_every_package_has_a_rule() -> None:
    packages = {p.name for p in (ROOT / PACKAGE).iterdir() if (p / "__init__.py").exists()}
    assert packages <= set(RULES), sorted(packages - set(RULES))


# What still breaks a rule, to be cut: the test fails on any import not listed here, and on
# a listed one that is gone (so the list only shrinks).
NOT_YET: frozenset[str] = frozenset()


def test_packages_import_only_what_their_docstring_allows() -> None:
    broken = set(upward_imports(import_graph()))
    assert not broken - NOT_YET, "\n".join(sorted(broken - NOT_YET))
    assert not NOT_YET - broken, "cut already, drop from NOT_YET:\n" + "\n".join(
        sorted(NOT_YET - broken)
    )


def test_no_two_classes_share_a_name() -> None:
    shared = {name: where for name, where in class_names().items() if len(where) > 1}
    assert not shared, "\n".join(f"{n}: {', '.join(w)}" for n, w in sorted(shared.items()))


def test_no_two_constants_of_one_package_share_a_name() -> None:
    # Modules merged into one another bring their constants along: two of one name in one
    # package (the notes `model.CONTINUE_NOTE` and `transcript.CONTINUE_NOTE`, one read by
    # module and one bare in the same function) are one slip from sending the wrong one.
    shared = {key: where for key, where in constant_names().items() if len(where) > 1}
    assert not shared, "\n".join(f"{p}.{n}: {', '.join(w)}" for (p, n), w in sorted(shared.items()))


def test_no_import_cycle_even_deferred() -> None:
    # A cycle broken only by a lazy or type-only import is still two modules that need
    # each other: the cut the line cap made between client and login was one.
    graph = import_graph()
    cycle = find_cycle({name: imports.every() for name, imports in graph.items()})
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])

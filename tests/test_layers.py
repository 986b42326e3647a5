"""The layout rule: imports run one way, ``schemas`` ← ``workers`` ← ``trainer`` ← ``streams``,
and no feature package of a layer imports one that imports it back.

Read from the source with :mod:`ast` (every ``import``, the lazy ones inside functions too),
so a violation fails here before it can hide behind import order at run time.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LAYERS = ("schemas", "workers", "trainer", "streams")
RANK = {name: i for i, name in enumerate(LAYERS)}
MAX_LINES = 600


def modules() -> Iterator[tuple[str, Path]]:
    for layer in LAYERS:
        for path in sorted((REPO / layer).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join(parts), path


def imported(module: str, path: Path) -> Iterator[tuple[str, int]]:
    """``(imported module, line)`` for every import in the file, relative ones resolved."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            yield name, node.lineno


def unit(module: str) -> str:
    """The feature a module belongs to: ``workers.drift._evaluate`` → ``workers.drift``."""
    return ".".join(module.split(".")[:2])


GRAPH = {
    module: [(name, line) for name, line in imported(module, path) if name.split(".")[0] in RANK]
    for module, path in modules()
}


def test_imports_only_run_down_the_layers() -> None:
    upward = [
        f"{module}:{line} imports {name}"
        for module, edges in GRAPH.items()
        for name, line in edges
        if RANK[name.split(".")[0]] > RANK[module.split(".")[0]]
    ]
    assert upward == []


def test_no_feature_package_imports_one_that_imports_it_back() -> None:
    edges: dict[str, set[str]] = {}
    for module, targets in GRAPH.items():
        for name, _ in targets:
            if unit(name) != unit(module):
                edges.setdefault(unit(module), set()).add(unit(name))
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_the_rule_sees_upward_and_relative_imports() -> None:
    """The checks above can fail: an upward and a relative import are both seen."""
    text = "from streams.config import WorkerSettings\n\ndef f():\n    from .drift import decide\n"
    edges = list(_imports_of_text("workers.probe", text))
    assert edges == [("streams.config", 1), ("workers.drift", 4)]


def _imports_of_text(module: str, text: str) -> Iterator[tuple[str, int]]:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "probe.py"
        path.write_text(text)
        yield from imported(module, path)


@pytest.mark.parametrize("layer", ["workers", "streams", "trainer"])
def test_no_module_is_over_600_lines(layer: str) -> None:
    long = {
        str(path.relative_to(REPO)): n
        for path in (REPO / layer).rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_every_error_class_derives_from_the_one_root() -> None:
    """An ``...Error``/``Exception`` subclass defined in the project derives from SentryMLError."""
    import importlib
    import inspect

    from schemas.exceptions import SentryMLError

    outside = []
    for module, path in modules():
        if "Exception" not in path.read_text() and "Error" not in path.read_text():
            continue
        loaded = importlib.import_module(module)
        for name, obj in vars(loaded).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == module
                and not issubclass(obj, SentryMLError)
            ):
                outside.append(f"{module}.{name}")
    assert outside == []

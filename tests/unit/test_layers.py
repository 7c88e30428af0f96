"""Layers point one way: `app/core` (settings, security, errors, logging, metrics) imports nothing
from the layers above it; `app/db` (the infrastructure) nothing from the services; and no module
of `app` imports itself back through others, counting imports made only for type checking or
inside functions."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "app"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in APP.rglob("*.py")}


def imported_modules(source: Path) -> set[str]:
    """Every module of `app` the file imports, wherever the import is written."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in MODULES else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name in MODULES}


GRAPH = {name: imported_modules(path) - {name} for name, path in MODULES.items()}


def imports_into(layer: str, forbidden: tuple[str, ...]) -> set[tuple[str, str]]:
    return {
        (name, imported)
        for name, imports in GRAPH.items()
        if name.startswith(layer)
        for imported in imports
        if imported.startswith(forbidden)
    }


def test_core_imports_nothing_from_the_layers_above() -> None:
    assert imports_into("app.core", ("app.db", "app.services", "app.runtime", "app.api", "app.models")) == set()


def test_the_infrastructure_imports_nothing_from_the_services() -> None:
    assert imports_into("app.db", ("app.services", "app.runtime", "app.api")) == set()


def test_services_never_import_the_api() -> None:
    assert imports_into("app.services", ("app.api", "app.application")) == set()


def cycles() -> Iterator[list[str]]:
    """Depth-first search; yields one path for each back edge found."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(name: str) -> Iterator[list[str]]:
        state[name] = "open"
        path.append(name)
        for imported in sorted(GRAPH[name]):
            if state.get(imported) == "open":
                yield [*path[path.index(imported) :], imported]
            elif imported not in state:
                yield from visit(imported)
        path.pop()
        state[name] = "done"

    for name in sorted(GRAPH):
        if name not in state:
            yield from visit(name)


def test_no_module_imports_itself_back() -> None:
    assert list(cycles()) == []

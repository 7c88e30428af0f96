"""Layers point one way: `app/core` (settings, security, errors, logging, metrics) imports nothing
from the layers above it, `app/db` and `app/services`."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "app" / "core"


def imported_modules(source: Path) -> set[str]:
    tree = ast.parse(source.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_core_imports_nothing_from_db_or_services() -> None:
    above = {
        (module.name, name)
        for module in CORE.glob("*.py")
        for name in imported_modules(module)
        if name.startswith(("app.db", "app.services"))
    }
    assert above == set()

"""The error catalogue (app/core/errors.py): one class per code, the README's list of codes the same,
and no error class or code string anywhere else."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import app.application  # noqa: F401  (every module that could define an error class)
from app.core.errors import AppError, InvalidTransitionError, catalogue
from app.services.lifecycles import BOOKING, PAYMENT, RESERVATION, WAITLIST

ROOT = Path(__file__).resolve().parent.parent
STATUS_OR_CODE = re.compile(r"\b([1-5][0-9]{2})\b|`([a-z_]+)`")


def readme_codes() -> dict[int, set[str]]:
    """The README's "Status codes" paragraph: each backticked code under the status before it."""
    readme = (ROOT / "README.md").read_text()
    paragraph = readme[readme.index("**Status codes.**") :].split("\n\n", 1)[0]
    codes: dict[int, set[str]] = {}
    status: int | None = None
    for number, code in STATUS_OR_CODE.findall(paragraph):
        if number:
            status = int(number)
        elif status is not None:
            codes.setdefault(status, set()).add(code)
    return codes


def catalogue_codes() -> dict[int, set[str]]:
    codes: dict[int, set[str]] = {}
    for error in catalogue():
        codes.setdefault(error.status_code, set()).add(error.code)
    return codes


def all_error_classes() -> list[type[AppError]]:
    found, pending = [], [AppError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def test_each_code_belongs_to_one_class() -> None:
    codes = [error.code for error in catalogue()]
    assert len(codes) == len(set(codes)), sorted(c for c in codes if codes.count(c) > 1)
    assert all(error.title and 100 <= error.status_code < 600 for error in catalogue())


def test_the_readme_lists_the_catalogue() -> None:
    assert readme_codes() == catalogue_codes()


def test_every_error_class_is_in_the_catalogue_module() -> None:
    names = [f"{cls.__module__}.{cls.__name__}" for cls in all_error_classes()]
    assert [name for name in names if name.startswith("app.") and not name.startswith("app.core.errors.")] == []


def test_the_catalogue_imports_nothing_of_the_service() -> None:
    tree = ast.parse((ROOT / "app/core/errors.py").read_text())
    imported = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    assert [name for name in imported if name and name.startswith("app")] == []


def test_no_code_string_is_given_at_a_raise_site() -> None:
    """Codes are classes: no `code="..."` argument, no comparison of a `.code` with a string."""
    offending = []
    for path in (ROOT / "app").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and any(
                k.arg == "code" and isinstance(k.value, ast.Constant) for k in node.keywords
            ):
                offending.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            if (
                isinstance(node, ast.Compare)
                and isinstance(node.left, ast.Attribute)
                and node.left.attr == "code"
                and any(isinstance(c, ast.Constant) and isinstance(c.value, str) for c in node.comparators)
            ):
                offending.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offending == []


def test_every_trigger_that_can_be_refused_has_its_refusal_in_the_catalogue() -> None:
    for machine in (BOOKING, PAYMENT, RESERVATION, WAITLIST):
        refusable = {trigger for trigger, source in machine.transitions if source is not None}
        assert refusable == set(machine.refusals), machine.entity_type
        assert all(refusal in catalogue() for refusal in machine.refusals.values())
        assert all(issubclass(refusal, InvalidTransitionError) for refusal in machine.refusals.values())

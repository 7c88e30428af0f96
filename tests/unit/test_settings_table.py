"""The README's settings table names every setting the service reads, and no other (the `OTEL_*`
variables are read by OpenTelemetry's own code)."""

from __future__ import annotations

import re
from pathlib import Path

from app.core.config import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def documented() -> set[str]:
    text = README.read_text()
    section = text[text.index("## Settings") : text.index("## Tests")]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            names |= set(re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1]))
    return {name for name in names if not name.startswith("OTEL_")}


def test_the_readme_documents_every_setting_and_no_other() -> None:
    assert documented() == {name.upper() for name in Settings.model_fields}

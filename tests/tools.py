"""Command-line checkers the deploy tests need, found on PATH or installed from Debian's packages.

promtool is taken out of the `prometheus` package into `.venv/tools/` (no server installed, none
started); a compose CLI comes from the `docker-compose` package when `docker compose` is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / ".venv" / "tools"


def _apt(*args: str, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(["apt-get", *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=600)


def _apt_with_fresh_lists(*args: str, cwd: str | None = None) -> None:
    """Run apt-get; on a machine whose package lists are missing or stale, update them once and retry."""
    if shutil.which("apt-get") is None:
        pytest.skip("apt-get is not available here to install the checker (Debian's package is needed)")
    if _apt(*args, cwd=cwd).returncode == 0:
        return
    _apt("update")
    result = _apt(*args, cwd=cwd)
    assert result.returncode == 0, f"apt-get {' '.join(args)} failed: {result.stderr[-2000:]}"


def promtool() -> str:
    found = shutil.which("promtool") or (TOOLS / "prometheus" / "usr" / "bin" / "promtool")
    if Path(found).exists():
        return str(found)
    with tempfile.TemporaryDirectory() as download:
        _apt_with_fresh_lists("download", "prometheus", cwd=download)
        (package,) = Path(download).glob("prometheus_*.deb")
        subprocess.run(["dpkg-deb", "-x", str(package), f"{download}/root"], check=True)
        TOOLS.mkdir(parents=True, exist_ok=True)
        shutil.move(f"{download}/root", TOOLS / "prometheus")  # whole, or not at all
    return str(TOOLS / "prometheus" / "usr" / "bin" / "promtool")


def compose() -> list[str]:
    """A compose command that can render the file without an engine (`config` needs none)."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    if shutil.which("docker-compose") is None:
        if os.geteuid() != 0:
            pytest.skip("no compose CLI, and installing Debian's docker-compose needs root (apt-get install)")
        _apt_with_fresh_lists("install", "-y", "--no-install-recommends", "docker-compose")
    return ["docker-compose"]

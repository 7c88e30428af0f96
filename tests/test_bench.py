"""The load generator itself, briefly, against a real service process: it must stay runnable and honest."""

from __future__ import annotations

import ast
import re
import subprocess
import sys

from app.core.config import Settings
from tests.service_process import ROOT, ServiceProcess
from tests.test_processes import process_env


def test_load_generator_sells_out_and_checks_the_database(settings: Settings) -> None:
    service = ServiceProcess(process_env(settings))
    service.start()
    try:
        command = [
            sys.executable, "-m", "bench.load", "--scenario", "spread", "--events", "3", "--capacity", "20",
            "--connections", "8", "--duration", "2", "--base-url", service.url,
            "--database-url", settings.sqlalchemy_database_url,
            "--jwt-secret", settings.jwt_secret.get_secret_value(),
        ]  # fmt: skip
        run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    finally:
        service.stop()
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert re.search(r"^bookings made\s+60$", out, re.M), out  # 3 events x 20 seats: sold out
    statuses = ast.literal_eval(re.search(r"^answers by status\s+(\{.*\})$", out, re.M).group(1))  # type: ignore[union-attr]
    assert set(statuses) == {201, 409} and statuses[201] == 60, out
    for check in ("invariant violations", "201 answers / booking rows", "reserved seats", "audit rows / outbox rows"):
        verdict = next(line for line in out.splitlines() if line.startswith(check))
        assert verdict.endswith("OK"), out

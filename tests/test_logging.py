"""Every log line through one pipeline: JSON when collected, readable lines on a development terminal."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import textwrap

from tests.conftest import ROOT

# A service configured as create_app does, then every kind of line a process writes.
SCRIPT = textwrap.dedent(
    """
    import asyncio, logging, warnings
    from app.application import create_app
    from app.core.config import Settings
    from app.core.logging import get_logger

    create_app(Settings(_env_file=None, environment="{environment}", database_url="postgresql://u@db/x",
                        redis_url="redis://cache:6379/0", jwt_secret="j" * 48, payment_webhook_secret="w" * 48))
    get_logger("app").info("service_event", answer=42)
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 1)
    warnings.warn("a library warning")

    async def main() -> None:
        asyncio.get_running_loop().call_exception_handler({{"message": "loop trouble", "exception": ValueError("x")}})

    asyncio.run(main())
    raise RuntimeError("uncaught")
    """
)


def run(environment: str, *, terminal: bool) -> tuple[str, str]:
    code = SCRIPT.format(environment=environment)
    if not terminal:
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
        return done.stdout, done.stderr
    controller, terminal_end = pty.openpty()
    process = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=terminal_end, stderr=subprocess.PIPE)
    os.close(terminal_end)
    chunks = []
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal's other end closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    _, stderr = process.communicate(timeout=60)
    os.close(controller)
    return b"".join(chunks).decode(errors="replace"), stderr.decode(errors="replace")


def test_every_line_is_json_when_not_on_a_terminal() -> None:
    stdout, stderr = run("development", terminal=False)
    assert stderr == ""  # nothing bypasses the pipeline: no plain-text warning or traceback
    records = [json.loads(line) for line in stdout.splitlines()]
    events = {record["event"].split(":")[0]: record for record in records}
    assert events["service_event"]["answer"] == 42
    assert events["Started server process [1]"]["logger"] == "uvicorn.error"
    assert "a library warning" in next(r["event"] for r in records if r.get("logger") == "py.warnings")
    assert "ValueError" in next(r["exception"] for r in records if r.get("logger") == "asyncio")
    assert "RuntimeError: uncaught" in events["uncaught_exception"]["exception"]


def test_development_terminal_gets_readable_lines_production_json() -> None:
    stdout, stderr = run("development", terminal=True)
    assert stderr == ""
    lines = [line for line in stdout.splitlines() if "service_event" in line]
    assert lines and not lines[0].lstrip().startswith("{") and "answer" in lines[0]
    assert "RuntimeError: uncaught" in stdout
    production, _ = run("production", terminal=True)
    assert json.loads(next(line for line in production.splitlines() if "service_event" in line))["answer"] == 42

"""`make run`'s embedded path (`python -m app.db.embedded`): killed once, the next run still stops everything."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from tests.conftest import ROOT
from tests.redis_server import free_port

CONFIGURED = ("DATABASE_URL", "DB_HOST", "REDIS_URL", "REDIS_HOST")


class EmbeddedRun:
    def __init__(self, data_dir: Path, port: int, log: Path) -> None:
        env = {name: value for name, value in os.environ.items() if name not in CONFIGURED}
        env.update({"EMBEDDED_DATA_DIR": str(data_dir), "PORT": str(port), "HOST": "127.0.0.1", "LOG_LEVEL": "WARNING"})
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app.db.embedded"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        self.data_dir = data_dir

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while "is ready" not in self.log.read_text(errors="replace"):
            assert self.process.poll() is None, self.log.read_text(errors="replace")
            assert time.monotonic() < deadline, self.log.read_text(errors="replace")
            time.sleep(0.2)

    def started_pids(self) -> dict[str, int]:
        """The service, PostgreSQL's postmaster and Redis this run is using."""
        services = [p.pid for p in psutil.Process(self.process.pid).children() if "main.py" in p.cmdline()]
        postmaster = (self.data_dir / "postgres" / "postmaster.pid").read_text().split()[0]
        redis = (self.data_dir / "redis" / "redis.pid").read_text().strip()
        assert len(services) == 1
        return {"service": services[0], "postgres": int(postmaster), "redis": int(redis)}


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_gone(pids: dict[str, int], timeout: float = 30) -> dict[str, int]:
    """The pids still alive after `timeout` (none, if all went)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(pid) for pid in pids.values()):
        time.sleep(0.2)
    return {name: pid for name, pid in pids.items() if alive(pid)}


def test_killed_run_leaves_nothing_after_the_next_run(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "data", free_port()
    first = EmbeddedRun(data_dir, port, tmp_path / "first.log")
    second: EmbeddedRun | None = None
    started: dict[str, int] = {}
    try:
        first.wait_ready()
        started = first.started_pids()
        first.process.kill()  # unclean: no chance to stop anything
        first.process.wait(10)
        # The service and Redis stop with their parent; PostgreSQL (a daemon) is the next run's to stop.
        assert wait_gone({"service": started["service"], "redis": started["redis"]}) == {}
        second = EmbeddedRun(data_dir, port, tmp_path / "second.log")
        second.wait_ready()
        started.update({f"next {name}": pid for name, pid in second.started_pids().items()})
        second.process.send_signal(signal.SIGHUP)  # the terminal closed
        assert second.process.wait(60) == 0
        assert wait_gone(started) == {}, second.log.read_text(errors="replace")
        output = first.log.read_text(errors="replace") + second.log.read_text(errors="replace")
        # No traceback, and the development servers' known warnings silenced at their source.
        for noise in ("Traceback", "pkg_resources", "XDG_RUNTIME_DIR"):
            assert noise not in output, output
    finally:
        for run in (first, second):
            if run is not None and run.process.poll() is None:
                run.process.kill()
        for pid in started.values():
            if alive(pid):
                psutil.Process(pid).kill()

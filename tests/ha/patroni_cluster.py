"""A throwaway PostgreSQL 15 cluster managed by Patroni, with etcd as its store, all on loopback.

etcd comes from the system packages and Patroni from PyPI (`requirements-ha.txt`, into `.venv-ha`
made with the system's python3, which the `postgres` user can run); both are installed when
missing. PostgreSQL refuses to run as root, so when this runs as root Patroni (and the postgres it
starts) run as the `postgres` user. Every process is stopped by its own pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import asyncpg

from tests.ha.redis_topology import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
ROOT = Path(__file__).resolve().parents[2]
SCOPE = "evently-ha"
HA_VENV = ROOT / ".venv-ha"
SHM = Path("/dev/shm")
SYSTEM_PYTHON = "/usr/bin/python3"


def ensure_installed() -> None:
    """etcd from apt, Patroni into this venv, when missing."""
    if shutil.which("etcd") is None:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "etcd-server", "etcd-client"], check=True, env=env)
    if not patroni_executable().exists():
        subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(HA_VENV)], check=True)
        requirements = ROOT / "requirements-ha.txt"
        pip = [str(HA_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, "-r", str(requirements)], check=True)
    if not (PG_BIN / "postgres").exists():
        raise RuntimeError(f"PostgreSQL 15 is not installed in {PG_BIN}")


def patroni_executable() -> Path:
    return HA_VENV / "bin" / "patroni"


def wait_until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            answer = check()
            if answer:
                return answer
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


class Etcd:
    def __init__(self, workdir: Path) -> None:
        self.client_port = free_port()
        self.peer_port = free_port()
        # In memory when it can be: a slow fsync on a busy disk stalls etcd, and Patroni demotes a
        # primary that cannot renew its leader key in time.
        self.dir = Path(tempfile.mkdtemp(prefix="ha-etcd-", dir=SHM if SHM.is_dir() else None)) / "etcd"
        self._log = workdir / "etcd.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def start(self) -> None:
        self.dir.mkdir(parents=True)
        client, peer = f"http://{self.endpoint}", f"http://127.0.0.1:{self.peer_port}"
        log = self._log.open("ab")
        self.process = subprocess.Popen(
            [
                "etcd", "--name", "ha", "--data-dir", str(self.dir),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"ha={peer}", "--enable-v2=true",
            ],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_until(lambda: _get_json(f"{client}/health").get("health") == "true", 30, "etcd")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None
        shutil.rmtree(self.dir.parent, ignore_errors=True)


def _get_json(url: str, timeout: float = 2.0) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


class PatroniNode:
    def __init__(self, name: str, workdir: Path, etcd: Etcd) -> None:
        self.name = name
        self.pg_port = free_port()
        self.rest_port = free_port()
        self.dir = workdir / name
        self.data_dir = self.dir / "data"
        self._etcd = etcd
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def config(self) -> dict[str, Any]:
        trust = ["local all all trust", "host all all 127.0.0.1/32 trust", "host replication all 127.0.0.1/32 trust"]
        user = {"username": "postgres", "password": "postgres"}
        return {
            "scope": SCOPE,
            "name": self.name,
            "namespace": f"/{self.dir.parent.name}/",
            "restapi": {"listen": f"127.0.0.1:{self.rest_port}", "connect_address": f"127.0.0.1:{self.rest_port}"},
            "etcd3": {"hosts": [self._etcd.endpoint]},
            "bootstrap": {
                "dcs": {
                    # Generous for a busy shared machine: loop_wait + 2 * retry_timeout <= ttl.
                    "ttl": 30,
                    "loop_wait": 1,
                    "retry_timeout": 10,
                    "maximum_lag_on_failover": 1048576,
                    # Every commit waits for the synchronous standby: an answered booking is on two nodes.
                    "synchronous_mode": True,
                    # A primary whose postgres died is not restarted in place: a standby takes over.
                    "primary_start_timeout": 0,
                    "postgresql": {
                        "use_pg_rewind": True,
                        "parameters": {"wal_log_hints": "on", "max_connections": 200, "hot_standby": "on"},
                        "pg_hba": trust,
                    },
                },
                "initdb": [{"encoding": "UTF8"}, {"auth": "trust"}],
            },
            "postgresql": {
                "listen": f"127.0.0.1:{self.pg_port}",
                "connect_address": f"127.0.0.1:{self.pg_port}",
                "data_dir": str(self.data_dir),
                "bin_dir": str(PG_BIN),
                "pgpass": str(self.dir / "pgpass"),
                "authentication": {"superuser": user, "replication": user, "rewind": user},
                "parameters": {"unix_socket_directories": str(self.dir)},
                "pg_hba": trust,
                "remove_data_directory_on_rewind_failure": True,
                "remove_data_directory_on_diverged_timelines": True,
            },
            "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False, "nosync": False},
        }

    def start(self) -> None:
        self.dir.mkdir(parents=True)
        path = self.dir / "patroni.yml"
        path.write_text(json.dumps(self.config()))  # JSON is YAML
        log = (self.dir / "patroni.log").open("ab")
        as_postgres: dict[str, Any] = {}
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            for owned in (self.dir, path, self.dir / "patroni.log"):
                os.chown(owned, account.pw_uid, account.pw_gid)
            as_postgres = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        env = {**os.environ, "HOME": str(self.dir)}
        self.process = subprocess.Popen(
            [str(patroni_executable()), str(path)], stdout=log, stderr=subprocess.STDOUT, env=env, **as_postgres
        )

    def postmaster_pid(self) -> int:
        return int((self.data_dir / "postmaster.pid").read_text().split()[0])

    def kill_postmaster(self) -> None:
        os.kill(self.postmaster_pid(), signal.SIGKILL)

    def stop(self) -> None:
        """SIGKILL Patroni, then its postgres (the postmaster takes its backends with it)."""
        if self.process is None:
            return
        postmaster = None
        with contextlib.suppress(OSError, ValueError, IndexError):
            postmaster = self.postmaster_pid()
        self.process.kill()
        self.process.wait(10)
        self.process = None
        if postmaster is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(postmaster, signal.SIGKILL)


class PatroniCluster:
    """etcd plus `size` Patroni-managed PostgreSQL nodes in synchronous mode."""

    def __init__(self, size: int = 3) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ha-patroni-"))
        os.chmod(self.dir, 0o755)
        self.etcd = Etcd(self.dir)
        self.nodes = [PatroniNode(f"pg{i + 1}", self.dir, self.etcd) for i in range(size)]

    @property
    def hosts(self) -> str:
        return ",".join(f"127.0.0.1:{node.pg_port}" for node in self.nodes)

    def url(self, database: str, query: str = "") -> str:
        return f"postgresql://postgres@{self.hosts}/{database}{query}"

    def start(self) -> None:
        self.etcd.start()
        for node in self.nodes:
            node.start()
        wait_until(self._ready, 180, "Patroni to elect a leader and stream to every replica with one in sync")

    def members(self) -> list[dict[str, Any]]:
        for node in self.nodes:
            try:
                members: list[dict[str, Any]] = _get_json(f"{node.rest_url}/cluster")["members"]
                return members
            except OSError:
                continue
        return []

    def _ready(self) -> bool:
        roles = [(m["role"], m["state"]) for m in self.members()]
        return (
            len(roles) == len(self.nodes)
            and ("leader", "running") in roles
            and ("sync_standby", "streaming") in roles
            and all(state in ("running", "streaming") for _, state in roles)
        )

    def leader(self) -> PatroniNode:
        names = [m["name"] for m in self.members() if m["role"] == "leader" and m["state"] == "running"]
        return next(node for node in self.nodes if node.name in names)

    def sync_standby(self) -> PatroniNode:
        names = [m["name"] for m in self.members() if m["role"] == "sync_standby"]
        return next(node for node in self.nodes if node.name in names)

    def wait_for_leader_other_than(self, old: PatroniNode, timeout: float = 60) -> PatroniNode:
        wait_until(lambda: self._leader_name() not in (None, old.name), timeout, "a new Patroni leader")
        return self.leader()

    def _leader_name(self) -> str | None:
        names = [m["name"] for m in self.members() if m["role"] == "leader" and m["state"] == "running"]
        return names[0] if names else None

    def switchover(self) -> tuple[PatroniNode, PatroniNode]:
        """A planned switchover to the synchronous standby; returns (old leader, candidate)."""
        leader, candidate = self.leader(), self.sync_standby()
        body = json.dumps({"leader": leader.name, "candidate": candidate.name}).encode()
        request = urllib.request.Request(
            f"{leader.rest_url}/switchover", data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            if response.status != 200:
                raise RuntimeError(f"switchover refused: {response.read()!r}")
        return leader, candidate

    def wait_healthy(self, timeout: float = 120) -> None:
        wait_until(self._ready, timeout, "every node back and streaming")

    def wait_for_database(self, name: str, timeout: float = 30) -> None:
        async def everywhere() -> bool:
            for node in self.nodes:
                try:
                    connection = await asyncpg.connect(
                        host="127.0.0.1", port=node.pg_port, user="postgres", database=name
                    )
                except (OSError, asyncpg.PostgresError):
                    return False
                await connection.close()
            return True

        wait_until(lambda: asyncio.run(everywhere()), timeout, f"database {name} on every node")

    def log_tails(self, lines: int = 15) -> str:
        """The end of every node's Patroni log, for a failure message."""
        tails = []
        for node in self.nodes:
            log = node.dir / "patroni.log"
            text = log.read_text(errors="replace").splitlines()[-lines:] if log.exists() else []
            tails.append(f"--- {node.name}\n" + "\n".join(text))
        return "\n".join(tails)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.etcd.stop()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

"""Throwaway Redis topologies on loopback: a primary with a replica and three Sentinels, or a
six-node Cluster. Every process is started here and stopped here by its pid; the machine's own
Redis is never touched."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis

SERVICE = "mymaster"


def redis_server() -> str:
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError("redis-server is not installed")
    return found


def free_port(bus: bool = False) -> int:
    """A free loopback port; with `bus`, one whose cluster bus port (+10000) is free as well."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if not bus:
            return port
        if port + 10000 < 65536 and _free(port + 10000):
            return port


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


class Processes:
    """Processes started by one topology, each stopped by its own pid."""

    def __init__(self, prefix: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=prefix))
        self.by_port: dict[int, subprocess.Popen[bytes]] = {}
        self.args: dict[int, list[str]] = {}

    def start_redis(self, port: int, *extra: str) -> None:
        workdir = self.dir / str(port)
        workdir.mkdir(exist_ok=True)
        args = [redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(workdir)]
        self.args[port] = [*args, *extra]
        self.restart(port)

    def restart(self, port: int) -> None:
        """Start the redis-server of `port` again, with its data directory (as an operator would)."""
        log = (self.dir / str(port) / "log").open("ab")
        self.by_port[port] = subprocess.Popen(self.args[port], stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: redis.Redis(port=port, socket_timeout=0.5).ping(), 10, f"redis-server on {port}")

    def start_sentinel(self, port: int, primary_port: int) -> None:
        workdir = self.dir / str(port)
        workdir.mkdir(exist_ok=True)
        config = workdir / "sentinel.conf"
        config.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {workdir}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 5000\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        log = (workdir / "log").open("ab")
        self.by_port[port] = subprocess.Popen(
            [redis_server(), str(config), "--sentinel"], stdout=log, stderr=subprocess.STDOUT
        )
        wait_for(lambda: redis.Redis(port=port, socket_timeout=0.5).ping(), 10, f"sentinel on {port}")

    def kill(self, port: int) -> None:
        process = self.by_port.pop(port)
        process.kill()
        process.wait(10)

    def close(self) -> None:
        for port in list(self.by_port):
            self.kill(port)
        shutil.rmtree(self.dir, ignore_errors=True)


class SentinelTopology:
    """A primary, one replica and three Sentinels watching them as `mymaster`."""

    def __init__(self) -> None:
        self.processes = Processes("ha-sentinel-")
        self.primary_port = free_port()
        self.replica_port = free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]

    @property
    def sentinels(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def start(self) -> None:
        self.processes.start_redis(self.primary_port, "--appendonly", "yes")
        self.processes.start_redis(
            self.replica_port, "--appendonly", "yes", "--replicaof", "127.0.0.1", str(self.primary_port)
        )
        wait_for(self._replica_in_sync, 10, "the replica to sync")
        for port in self.sentinel_ports:
            self.processes.start_sentinel(port, self.primary_port)
        wait_for(self._sentinels_see_each_other, 15, "the sentinels to find each other and the replica")

    def _replica_in_sync(self) -> bool:
        info = redis.Redis(port=self.replica_port, socket_timeout=0.5).info("replication")
        return bool(info.get("master_link_status") == "up")

    def _sentinels_see_each_other(self) -> bool:
        for port in self.sentinel_ports:
            state = redis.Redis(port=port, socket_timeout=0.5).sentinel_master(SERVICE)
            if int(state["num-other-sentinels"]) < 2 or int(state["num-slaves"]) < 1:
                return False
        return True

    def current_primary_port(self) -> int:
        _, port = redis.Redis(port=self.sentinel_ports[0], socket_timeout=0.5).sentinel_get_master_addr_by_name(SERVICE)
        return int(port)

    def wait_replicated(self) -> None:
        wait_replicated([self.current_primary_port()])

    def kill_primary(self) -> int:
        """SIGKILL the primary; returns the port of the one killed."""
        port = self.current_primary_port()
        self.processes.kill(port)
        return port

    def wait_for_new_primary(self, old_port: int, timeout: float = 30) -> int:
        wait_for(lambda: self.current_primary_port() != old_port, timeout, "Sentinel to promote the replica")
        return self.current_primary_port()

    def bring_back(self, old_port: int, timeout: float = 30) -> None:
        """Restart the killed primary: Sentinel makes it a replica of the new one."""
        self.processes.restart(old_port)
        primary = self.current_primary_port()

        def following() -> bool:
            info = redis.Redis(port=old_port, socket_timeout=0.5).info("replication")
            return info["role"] == "slave" and info["master_port"] == primary and info["master_link_status"] == "up"

        wait_for(following, timeout, "the old primary to follow the new one")

    def close(self) -> None:
        self.processes.close()


def wait_replicated(primary_ports: list[int]) -> None:
    """Until every replica of these primaries has all their writes (WAIT from a fresh connection
    waits for nothing of its own: compare offsets instead)."""

    def caught_up() -> bool:
        for port in primary_ports:
            info = redis.Redis(port=port, socket_timeout=0.5).info("replication")
            offsets = [int(info[name]["offset"]) for name in info if name.startswith("slave")]
            if not offsets or min(offsets) < int(info["master_repl_offset"]):
                return False
        return True

    wait_for(caught_up, 10, "the replicas to catch up")


class ClusterTopology:
    """Six nodes: three primaries, each with one replica (`redis-cli --cluster create`)."""

    def __init__(self) -> None:
        self.processes = Processes("ha-cluster-")
        self.ports = [free_port(bus=True) for _ in range(6)]

    @property
    def nodes(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def start(self) -> None:
        for port in self.ports:
            self.processes.start_redis(
                port,
                "--cluster-enabled", "yes",
                "--cluster-config-file", f"nodes-{port}.conf",
                "--cluster-node-timeout", "1000",
                "--appendonly", "yes",
            )  # fmt: skip
        redis_cli = shutil.which("redis-cli")
        if redis_cli is None:
            raise RuntimeError("redis-cli is not installed")
        addresses = [f"127.0.0.1:{port}" for port in self.ports]
        subprocess.run(
            [redis_cli, "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        wait_for(self._healthy, 30, "the cluster to be ok with three replicas")

    def _healthy(self) -> bool:
        """Cluster ok everywhere and three replicas in sync: one never synced cannot take over."""
        if not self._all_ok():
            return False
        replicas = self.replica_ports()
        return len(replicas) == 3 and all(
            redis.Redis(port=port, socket_timeout=0.5).info("replication")["master_link_status"] == "up"
            for port in replicas
        )

    def _roles(self) -> dict[int, str]:
        roles = {}
        for port in self.processes.by_port:
            roles[port] = str(redis.Redis(port=port, socket_timeout=0.5).info("replication")["role"])
        return roles

    def replica_ports(self) -> list[int]:
        return [port for port, role in self._roles().items() if role == "slave"]

    def primary_of_slot(self, slot: int) -> int:
        any_port = next(iter(self.processes.by_port))
        for start, end, primary, *_ in redis.Redis(port=any_port, socket_timeout=0.5).execute_command(
            "CLUSTER", "SLOTS"
        ):
            if start <= slot <= end:
                return int(primary[1])
        raise RuntimeError(f"no node serves slot {slot}")

    def wait_replicated(self) -> None:
        wait_replicated([port for port, role in self._roles().items() if role == "master"])

    def kill_primary_of_slot(self, slot: int) -> int:
        port = self.primary_of_slot(slot)
        self.processes.kill(port)
        return port

    def wait_for_promotion(self, slot: int, old_port: int, timeout: float = 30) -> int:
        wait_for(lambda: self.primary_of_slot(slot) != old_port and self._all_ok(), timeout, "a replica to take over")
        return self.primary_of_slot(slot)

    def bring_back(self, old_port: int, timeout: float = 30) -> None:
        """Restart a killed node: it rejoins as a replica of the primary that replaced it."""
        self.processes.restart(old_port)

        def following() -> bool:
            info = redis.Redis(port=old_port, socket_timeout=0.5).info("replication")
            return info["role"] == "slave" and info["master_link_status"] == "up" and self._all_ok()

        wait_for(following, timeout, "the old primary to follow its replacement")

    def _all_ok(self) -> bool:
        return all(
            redis.Redis(port=port, socket_timeout=0.5).cluster("info")["cluster_state"] == "ok"
            for port in self.processes.by_port
        )

    def close(self) -> None:
        self.processes.close()

"""The server's processes as Linux shows them in /proc: which they are, their CPU time, their memory.

The server is found by its listening port: /proc/net/tcp{,6} gives the listening sockets' inodes,
and every process holding one of them among its file descriptors serves it (each worker listens on
a socket of its own, app/workers.py; a single process holds its own). The supervisor that started
the workers (uvicorn's, through multiprocessing) listens on none: it is found as their parent. Given
a pid instead, its descendants that listen on a socket are its workers.

    python -m bench.server --port 8002          # the pids, one a line
    python -m bench.server --port 8002 --root   # the topmost one (bench/profile.sh profiles it)
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
LISTEN = "0A"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def listening_sockets(port: int | None = None) -> set[str]:
    """The listening TCP sockets on `port` (on any port if None), as their fd links read: `socket:[inode]`."""
    sockets: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if fields[3] == LISTEN and port in (None, local_port):
                sockets.add(f"socket:[{fields[9]}]")
    return sockets


def _pids() -> list[int]:
    return [int(entry.name) for entry in PROC.iterdir() if entry.name.isdigit()]


def _descriptors(pid: int) -> set[str]:
    try:
        entries = list((PROC / str(pid) / "fd").iterdir())
    except OSError:
        return set()
    links = set()
    for entry in entries:
        try:
            links.add(os.readlink(entry))
        except OSError:
            continue
    return links


def _parent(pid: int) -> int | None:
    try:
        return int((PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def server_pids(port: int) -> list[int]:
    """Every process serving `port` on this machine (empty if none is visible from here), with the
    supervisor of its workers."""
    sockets = listening_sockets(port)
    if not sockets:
        return []
    serving = {pid for pid in _pids() if _descriptors(pid) & sockets}
    supervisors = {_parent(pid) for pid in serving if _started_by_multiprocessing(pid)}
    return sorted(serving | {pid for pid in supervisors if pid is not None})


def _started_by_multiprocessing(pid: int) -> bool:
    try:
        return b"--multiprocessing-fork" in (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return False


def with_workers(pids: set[int]) -> list[int]:
    """The given processes and their descendants that listen on a socket: its workers (not, say, a
    multiprocessing resource tracker, which runs the same executable but serves nothing)."""
    listening = listening_sockets()
    found = set(pids)
    parents = {pid: _parent(pid) for pid in _pids()}
    grew = True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in found} - found
        found |= {pid for pid in children if _descriptors(pid) & listening}
        grew = bool(children) and bool(found & children)
    return sorted(found)


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU time the process has used so far (zeros if it is gone)."""
    try:
        fields = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS  # utime, stime: fields 14 and 15 of stat


def resident_mb(pid: int) -> float | None:
    """VmRSS in MB, or None if the process is gone."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@dataclass(frozen=True, slots=True)
class ServerProcess:
    pid: int
    role: str  # "supervisor" (starts the workers, serves nothing itself) or "worker"


def describe(pids: list[int]) -> list[ServerProcess]:
    """A process whose child is also among `pids` supervises; the others serve."""
    parents = {_parent(pid) for pid in pids}
    return [ServerProcess(pid, "supervisor" if pid in parents else "worker") for pid in pids]


class CpuMeter:
    """CPU time the server's processes use from now on (summed over them)."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self._start = self._times()

    def _times(self) -> tuple[float, float]:
        times = [cpu_times(pid) for pid in self.pids]
        return sum(user for user, _ in times), sum(system for _, system in times)

    def used(self) -> float:
        """User plus system time since the meter started."""
        return sum(self.used_by_kind())

    def used_by_kind(self) -> tuple[float, float]:
        """User time and system time since the meter started."""
        (user, system), (user_then, system_then) = self._times(), self._start
        return user - user_then, system - system_then


def main() -> None:
    parser = argparse.ArgumentParser(description="Print the pids of the processes serving a port, one a line.")
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument("--root", action="store_true", help="only the topmost (the one to profile with its children)")
    args = parser.parse_args()
    pids = server_pids(args.port)
    for pid in pids:
        if not args.root or _parent(pid) not in pids:
            print(pid)


if __name__ == "__main__":
    main()

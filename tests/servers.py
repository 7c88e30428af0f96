"""Finding PostgreSQL and Redis for the test session, or starting embedded ones."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from urllib.parse import urlparse

import asyncpg

from app.db.embedded import EmbeddedServers


def tcp_answers(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    if not parsed.hostname:
        return False
    try:
        with socket.create_connection((parsed.hostname, parsed.port or default_port), timeout=1):
            return True
    except OSError:
        return False


def asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def with_database(url: str, name: str) -> str:
    parsed = urlparse(url)
    return parsed._replace(path=f"/{name}").geturl()


async def _admin(url: str, statement: str) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def create_database(admin_url: str, name: str) -> None:
    asyncio.run(_admin(admin_url, f'CREATE DATABASE "{name}"'))


def drop_database(admin_url: str, name: str) -> None:
    asyncio.run(_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def embedded(data_dir: Path) -> EmbeddedServers:
    return EmbeddedServers(data_dir, ephemeral=True)

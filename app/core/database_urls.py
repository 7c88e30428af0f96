"""Database URLs as SQLAlchemy's asyncpg dialect takes them, from the forms operators write.

Three forms name several PostgreSQL hosts; all end up as SQLAlchemy's multihost query form:
- libpq's comma list, `postgresql://u@h1:5432,h2:5433/db` (SQLAlchemy cannot parse it: it reads
  `5432,h2:5433` as the port), rewritten here to the query form;
- SQLAlchemy's own, `postgresql+asyncpg://u@/db?host=h1:5432&host=h2:5433`, passed as it is;
- one host, as before, passed as it is.

With several hosts and no `target_session_attrs`, the writer's URL asks for `read-write` (asyncpg
otherwise takes the first host that answers, which may be a standby) and the readers' URL for
`prefer-standby`.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sqlalchemy.engine import make_url

DEFAULT_PORT = 5432
WRITER_ATTRS = "read-write"
READER_ATTRS = "prefer-standby"


def sqlalchemy_url(url: str, default_session_attrs: str = WRITER_ATTRS) -> str:
    """`url` with the asyncpg driver named and several hosts in SQLAlchemy's query form."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            url = "postgresql+asyncpg://" + url[len(plain) :]
    parts = urlsplit(url)
    credentials, _, hostlist = parts.netloc.rpartition("@")
    query = parse_qsl(parts.query, keep_blank_values=True)
    if "," in hostlist:
        hosts = [_with_port(host) for host in hostlist.split(",")]
        query = [("host", host) for host in hosts] + query
        netloc = f"{credentials}@" if credentials else ""
        url = urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe=":"), parts.fragment))
    if host_count(url) > 1 and not any(name == "target_session_attrs" for name, _ in query):
        url += ("&" if "?" in url else "?") + f"target_session_attrs={default_session_attrs}"
    return url


def host_count(url: str) -> int:
    hosts = make_url(url).query.get("host", ())
    return len(hosts) if isinstance(hosts, tuple) else len(hosts.split(","))


def _with_port(host: str) -> str:
    """`h` -> `h:5432`: the asyncpg dialect wants every host's port when there are several (and,
    splitting on `:`, takes no IPv6 literal among them)."""
    return host if ":" in host else f"{host}:{DEFAULT_PORT}"

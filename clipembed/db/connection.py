"""Where the database is, and connections to it.

``DATABASE_URL`` names any PostgreSQL >= 14 with pgvector >= 0.5. Without it, clipembed starts
an embedded PostgreSQL 18 + pgvector (:mod:`clipembed.embedded`) with its data under
``CLIPEMBED_HOME/pgdata`` and keeps the data between runs.

pgvector's types are registered once per pooled connection, in the pool's ``configure``
callback, so every query can send and receive numpy vectors in binary.
"""

from __future__ import annotations

import functools
import logging
import select
from typing import Any

import psycopg
from pgvector.psycopg import register_vector_async
from psycopg_pool import AsyncConnectionPool

from clipembed import embedded, errors, redaction, source
from clipembed.db import priority
from clipembed.settings import Settings

# The statements of a connection itself (health, timeouts, advisory locks): no table of ours.
PING = "SELECT 1"
HAS_PGVECTOR = "SELECT 1 FROM pg_type WHERE typname = 'vector'"
NO_STATEMENT_TIMEOUT = "SET statement_timeout = 0"
RESET_STATEMENT_TIMEOUT = "RESET statement_timeout"
TRY_LOCK = "SELECT pg_try_advisory_lock(%s)"
UNLOCK = "SELECT pg_advisory_unlock(%s)"

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10  # seconds


def redact_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    return redaction.redact_url(url) or url


def database_url(settings: Settings) -> str:
    """``DATABASE_URL``, or the embedded server's URL (starting it if needed)."""
    if settings.database_url is not None and settings.database_url.get_secret_value():
        return settings.database_url.get_secret_value()
    return embedded.postgres_url(settings.clipembed_home)


async def _use_search_path(conn: psycopg.AsyncConnection[Any]) -> None:
    """clipembed's schema first (an adopted installation keeps its tables there), then public.

    Set per session, not in the URL's ``options``: a connection pooler may drop startup options.
    """
    await conn.execute("SELECT set_config('search_path', %s, false)", (source.SEARCH_PATH,))
    if not conn.autocommit:
        await conn.commit()


async def connect(url: str, **kwargs: Any) -> psycopg.AsyncConnection[Any]:
    """One connection, with connection errors turned into a one-line ConfigurationError."""
    try:
        conn = await psycopg.AsyncConnection.connect(url, connect_timeout=CONNECT_TIMEOUT, **kwargs)
    except psycopg.OperationalError as exc:
        reason = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        reason = reason or type(exc).__name__
        raise errors.ConfigurationError(
            f"cannot connect to the database {redact_url(url)}: {reason}"
        ) from exc
    try:
        await _use_search_path(conn)
    except BaseException:
        await conn.close()
        raise
    return conn


async def _configure(conn: psycopg.AsyncConnection[Any], *, nice: int = 0) -> None:
    await register_vector_async(conn)
    if nice > 0:
        priority.lower_priority(conn.info, nice)
    await conn.execute("SELECT set_config('search_path', %s, false)", (source.SEARCH_PATH,))
    # configure runs inside no transaction block of ours; end the implicit one.
    await conn.commit()


async def check_connection(conn: psycopg.AsyncConnection[Any]) -> None:
    """The pool's check before lending a connection, without a round trip when none is needed.

    psycopg_pool's own check sends an empty query on every acquire (three round trips of a
    search). A server that ends a connection (restart, ``pg_terminate_backend``, idle timeout)
    sends its FATAL message and closes the socket, which makes it readable: only then is the
    full check run, and a dead connection is replaced before anyone uses it. An idle pooled
    connection has nothing to read otherwise.
    """
    if conn.closed or conn.broken:
        raise psycopg.OperationalError("the connection is closed")
    readable, _, _ = select.select([conn.fileno()], [], [], 0)
    if readable:
        await AsyncConnectionPool.check_connection(conn)


#: The search pool's ``application_name``: bulk work watches its statements (bulk/adaptive_pace.py).
SEARCH_APPLICATION = "clipembed-search"


async def open_pool(
    url: str,
    *,
    application_name: str | None = None,
    min_size: int = 1,
    max_size: int = 8,
    statement_timeout_ms: int = 0,
    acquire_timeout: float = 30.0,
    autocommit: bool = False,
    nice: int = 0,
) -> AsyncConnectionPool:
    """A pool whose connections know pgvector's types. The schema must be migrated first.

    ``statement_timeout_ms`` (0: none) bounds every statement on its connections: search pools
    get a short one, job pools a long one (SEARCH_/JOBS_STATEMENT_TIMEOUT_MS), so a runaway
    query is cancelled by PostgreSQL instead of holding a connection forever.

    ``application_name``: how the pool's sessions appear in ``pg_stat_activity``.

    ``autocommit``: each statement its own transaction unless the caller opens one (the search
    pool: a read needs no BEGIN and COMMIT around it, two round trips of a search's six).

    ``nice``: bulk work's pool; each session's backend is reniced to it where the server runs
    on this machine (:mod:`clipembed.db.priority`).

    Checks connectivity first so a wrong URL fails with one clear line, not a pool timeout.
    """
    conn = await connect(url)
    try:
        async with conn.cursor() as cur:
            await cur.execute(HAS_PGVECTOR)
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
        configure=_configure if nice <= 0 else functools.partial(_configure, nice=nice),
        kwargs={
            "connect_timeout": CONNECT_TIMEOUT,
            "options": f"-c statement_timeout={int(statement_timeout_ms)}",
            **({"application_name": application_name} if application_name else {}),
            "autocommit": autocommit,
        },
        open=False,
        # how long a caller waits for a connection (search: its deadline, then "overloaded")
        timeout=acquire_timeout,
        # A connection broken by a server restart is detected and replaced before use.
        check=check_connection,
        reconnect_timeout=300,
    )
    await pool.open(wait=True, timeout=CONNECT_TIMEOUT * 3)
    return pool

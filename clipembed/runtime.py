"""Wiring: settings -> database pool, Redis, embedding service, for the jobs and the API.

Every long-running command opens one :class:`Runtime` and passes it down, so the wiring (and
its checks: reachable database, migrated schema with the configured dimensions) lives here once.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from psycopg_pool import AsyncConnectionPool

from clipembed import models
from clipembed import settings as settings_mod
from clipembed.db import connection, migrations

if TYPE_CHECKING:
    from clipembed.service import EmbeddingService


async def resolve_dimensions(cfg: settings_mod.Settings) -> int:
    """The embedding column's size for this configuration (loads a local model only if unknown)."""
    if cfg.dimensions is not None:
        return cfg.dimensions
    known = models.LOCAL_MODEL_DIMENSIONS.get(cfg.model)
    if known is not None:
        return known
    from clipembed import providers

    provider = providers.create(cfg)
    try:
        return provider.dimensions
    finally:
        await provider.aclose()


@dataclasses.dataclass
class Runtime:
    settings: settings_mod.Settings
    database_url: str = dataclasses.field(repr=False)  # may hold a password
    pool: AsyncConnectionPool
    dimensions: int
    service: EmbeddingService | None = None
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: the pool search reads from (short statement timeout); the jobs' pool when not opened
    search_pool: AsyncConnectionPool | None = None

    @property
    def reader(self) -> AsyncConnectionPool:
        """The pool for search queries."""
        return self.search_pool or self.pool

    def require_service(self) -> EmbeddingService:
        assert self.service is not None, "runtime opened without an embedding service"
        return self.service


@contextlib.asynccontextmanager
async def open_runtime(
    cfg: settings_mod.Settings,
    *,
    with_service: bool = True,
    pool_max_size: int = 8,
    search: bool = False,
) -> AsyncIterator[Runtime]:
    """Connect, check the schema matches the settings, and build the embedding service."""
    url = connection.database_url(cfg)
    dims = await resolve_dimensions(cfg)
    conn = await connection.connect(url, autocommit=True)
    async with conn:
        await migrations.check_current(conn, dimensions=dims)
    pool = await connection.open_pool(
        url, max_size=pool_max_size, statement_timeout_ms=cfg.jobs_statement_timeout_ms
    )
    search_pool = None
    service = None
    try:
        if search:
            # SEARCH_DATABASE_URL: a read replica (hot standby) serves search; jobs keep writing
            # through ``pool`` on the primary. Search only reads (SET LOCAL/set_config and
            # commits of read-only transactions are allowed on a standby).
            search_url = url
            replica = cfg.search_database_url
            if replica is not None and replica.get_secret_value().strip():
                search_url = replica.get_secret_value().strip()
                # a replica of another database, or one not yet caught up with a migration
                check = await connection.connect(search_url, autocommit=True)
                async with check:
                    await migrations.check_current(check, dimensions=dims)
            search_pool = await connection.open_pool(
                search_url,
                max_size=pool_max_size,
                statement_timeout_ms=cfg.search_statement_timeout_ms,
            )
        if with_service:
            from clipembed import service as service_mod

            service = await service_mod.open_service(cfg)
        yield Runtime(
            settings=cfg,
            database_url=url,
            pool=pool,
            dimensions=dims,
            service=service,
            search_pool=search_pool,
        )
    finally:
        if service is not None:
            await service.aclose()
        if search_pool is not None:
            await search_pool.close()
        await pool.close()

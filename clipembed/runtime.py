"""Wiring: settings -> database pool, Redis, embedding service, for the jobs and the API.

Every long-running command opens one :class:`Runtime` and passes it down, so the wiring (and
its checks: reachable database, migrated schema with the configured dimensions) lives here once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from psycopg_pool import AsyncConnectionPool

from clipembed import models
from clipembed import settings as settings_mod
from clipembed.db import connection, migrations

if TYPE_CHECKING:
    from clipembed.embedding.service import EmbeddingService
    from clipembed.spaces import Space


async def resolve_dimensions(cfg: settings_mod.Settings) -> int:
    """The embedding column's size for this configuration (loads a local model only if unknown)."""
    if cfg.dimensions is not None:
        return cfg.dimensions
    known = models.LOCAL_MODEL_DIMENSIONS.get(cfg.model)
    if known is not None:
        return known
    from clipembed.embedding import providers

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
    #: the pool search reads from (short statement timeout); the jobs' pool when not opened
    search_pool: AsyncConnectionPool | None = None
    #: the embedding space this process's jobs write (the active one unless asked otherwise);
    #: ``service`` embeds into it
    space: Space | None = None
    #: services of other spaces (workers maintain every space; search follows the active one)
    services: dict[tuple[Any, ...], EmbeddingService] = dataclasses.field(default_factory=dict)
    _services_lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)

    @property
    def reader(self) -> AsyncConnectionPool:
        """The pool for search queries."""
        return self.search_pool or self.pool

    def require_service(self) -> EmbeddingService:
        assert self.service is not None, "runtime opened without an embedding service"
        return self.service

    def require_space(self) -> Space:
        assert self.space is not None, "runtime opened before its embedding space was read"
        return self.space

    async def service_for(self, space: Space) -> EmbeddingService:
        """The service that embeds into ``space`` (opened once per process, then reused)."""
        if (
            self.space is not None
            and self.service is not None
            and space_key(space) == space_key(self.space)
        ):
            return self.service
        key = space_key(space)
        async with self._services_lock:
            svc = self.services.get(key)
            if svc is None:
                from clipembed.embedding import service as service_mod

                svc = await service_mod.open_service(space.settings_for(self.settings))
                if svc.dimensions != space.dimensions:
                    await svc.aclose()
                    from clipembed.spaces import SpaceError

                    raise SpaceError(
                        f"space {space.name!r} holds {space.dimensions}-dimensional vectors but "
                        f"its model gives {svc.dimensions}"
                    )
                self.services[key] = svc
            return svc


def space_key(space: Space) -> tuple[Any, ...]:
    """What decides which service embeds into a space: two spaces with it equal share one."""
    return (space.provider, space.model, space.dimensions)


@contextlib.asynccontextmanager
async def open_runtime(
    cfg: settings_mod.Settings,
    *,
    with_service: bool = True,
    pool_max_size: int = 8,
    search: bool = False,
    space: str | None = None,
    bulk: bool = False,
) -> AsyncIterator[Runtime]:
    """Connect, check the schema matches the settings, and build the embedding service.

    ``space``: the embedding space the jobs write (default: the active one); the service embeds
    with that space's model.

    ``bulk``: the jobs pool serves bulk work, whose sessions run at
    ``CLIPEMBED_BULK_NICE`` where the server is on this machine (clipembed.db.priority).
    """
    from clipembed import spaces

    url = connection.database_url(cfg)
    dims = await resolve_dimensions(cfg)
    conn = await connection.connect(url, autocommit=True)
    async with conn:
        await migrations.check_current(conn, dimensions=dims)
        target = await (spaces.by_name(conn, space) if space else spaces.active(conn))
    dims = target.dimensions
    pool = await connection.open_pool(
        url,
        max_size=pool_max_size,
        statement_timeout_ms=cfg.jobs_statement_timeout_ms,
        nice=cfg.clipembed_bulk_nice if bulk else 0,
    )
    search_pool = None
    service = None
    try:
        if search:
            # SEARCH_DATABASE_URL: a read replica (hot standby) serves search; jobs keep writing
            # through ``pool`` on the primary. Search only reads (SET LOCAL/set_config and
            # commits of read-only transactions are allowed on a standby).
            search_url = url
            if cfg.reads_replica and cfg.search_database_url is not None:
                search_url = cfg.search_database_url.get_secret_value().strip()
                # a replica of another database, or one not yet caught up with a migration
                check = await connection.connect(search_url, autocommit=True)
                async with check:
                    await migrations.check_current(check, dimensions=dims)
            search_pool = await connection.open_pool(
                search_url,
                max_size=pool_max_size,
                statement_timeout_ms=cfg.search_statement_timeout_ms,
                # a search never waits longer for a connection than it may take (issue 18):
                # past that the API answers "overloaded" (clipembed.api.failures)
                acquire_timeout=(cfg.search_statement_timeout_ms or 30_000) / 1000,
                autocommit=True,  # reads: no BEGIN/COMMIT round trips around each statement
                # bulk work watches these sessions' statements and slows while they suffer
                application_name=connection.SEARCH_APPLICATION,
            )
        if with_service:
            from clipembed.embedding import service as service_mod

            service = await service_mod.open_service(target.settings_for(cfg))
        rt = Runtime(
            settings=cfg,
            database_url=url,
            pool=pool,
            dimensions=dims,
            service=service,
            search_pool=search_pool,
            space=target,
        )
        try:
            yield rt
        finally:
            for other in rt.services.values():
                await other.aclose()
    finally:
        if service is not None:
            await service.aclose()
        if search_pool is not None:
            await search_pool.close()
        await pool.close()

"""The Redis embedding cache, and the Redis link it shares with the rate limiter.

Keys are the original's plus the dimensions: ``{prefix}embedding:{sha256(model:text)}:{dims}``.
Values are raw little-endian float32 bytes (3 KB at 768 dimensions, a quarter of JSON floats);
a value of the wrong length is treated as a miss, never returned. One MGET per batch of
lookups, one pipeline of SET EX per batch of stores.

Redis is an optimisation, never a dependency: when it is absent or fails, :class:`RedisLink`
logs once, reports "unavailable" for a back-off period (so a dead Redis costs no timeouts on
the hot path) and then tries again, so the cache comes back by itself when Redis does.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from clipembed import clips, redaction

logger = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_AFTER = 30.0  # seconds before trying a failed Redis again
SOCKET_TIMEOUT = 2.0  # seconds; a slow Redis must not stall embedding

REDIS_ERRORS = (redis_errors.RedisError, OSError, TimeoutError)


def redact(url: str) -> str:
    """The URL with its password replaced by ``***``: safe for logs and reprs."""
    return redaction.redact_url(url) or url


class RedisLink:
    """A Redis client that degrades instead of failing: ``call`` returns ``default`` when down."""

    def __init__(self, url: str, *, retry_after: float = RETRY_AFTER) -> None:
        self.url = url
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=SOCKET_TIMEOUT,
            health_check_interval=30,
        )
        self.retry_after = retry_after
        self._down_until = 0.0
        self._warned = False

    def __repr__(self) -> str:
        return f"RedisLink({redact(self.url)!r})"

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    async def call(self, fn: Callable[[aioredis.Redis], Awaitable[T]], default: T) -> T:
        """Run ``fn(client)``; on a Redis failure mark the link down and return ``default``."""
        if not self.available:
            return default
        try:
            result = await fn(self.client)
        except REDIS_ERRORS as exc:
            self._down_until = time.monotonic() + self.retry_after
            if not self._warned:
                logger.warning(
                    "Redis unavailable: continuing without cache and with a per-process rate limit",
                    extra={
                        "redis": redact(self.url),
                        "reason": type(exc).__name__,
                        "retry_in_s": self.retry_after,
                    },
                )
                self._warned = True
            return default
        if self._warned:
            logger.info("Redis is back: cache and shared rate limit resumed")
            self._warned = False
        return result

    async def ping(self) -> bool:
        async def _ping(c: aioredis.Redis) -> bool:
            return bool(await c.ping())

        return await self.call(_ping, False)

    async def aclose(self) -> None:
        with contextlib.suppress(redis_errors.RedisError, OSError):
            await self.client.aclose()


class EmbeddingCache:
    """Vectors by (model, dimensions, text) in Redis, with a TTL."""

    def __init__(
        self, link: RedisLink, *, prefix: str, model: str, dimensions: int, ttl_seconds: int
    ) -> None:
        self.link = link
        self.prefix = prefix
        self.model = model
        self.dimensions = dimensions
        self.ttl_seconds = ttl_seconds

    def key(self, text: str) -> str:
        return f"{self.prefix}embedding:{clips.cache_digest(self.model, text)}:{self.dimensions}"

    def _decode(self, raw: Any) -> np.ndarray | None:
        if not isinstance(raw, bytes | bytearray) or len(raw) != self.dimensions * 4:
            return None
        vec = np.frombuffer(raw, dtype="<f4").astype(np.float32)
        return vec if np.isfinite(vec).all() else None

    async def get_many(self, texts: Sequence[str]) -> list[np.ndarray | None]:
        """One MGET; a miss, a corrupt value or an unavailable Redis gives None."""
        if not texts:
            return []
        keys = [self.key(t) for t in texts]

        async def mget(c: aioredis.Redis) -> list[Any]:
            return list(await c.mget(keys))

        raw = await self.link.call(mget, [None] * len(keys))
        return [self._decode(r) for r in raw]

    async def set_many(self, items: Sequence[tuple[str, np.ndarray]]) -> None:
        """Pipelined SET EX of every (text, vector); silently skipped when Redis is down."""
        if not items or self.ttl_seconds <= 0:
            return

        async def store(c: aioredis.Redis) -> None:
            async with c.pipeline(transaction=False) as pipe:
                for text, vec in items:
                    pipe.set(
                        self.key(text), np.asarray(vec, dtype="<f4").tobytes(), ex=self.ttl_seconds
                    )
                await pipe.execute()

        await self.link.call(store, None)

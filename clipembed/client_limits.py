"""Per-client budgets and per-minute counts, shared by every process through Redis.

The HTTP faces limit what one client may do (searches per second, query embeddings per minute,
failed sign-ins per minute) with GCRA, the algorithm :mod:`clipembed.embedding.ratelimit` paces the
provider with, keyed by client. A key's whole state is one number, its *theoretical arrival
time* (TAT): a hit pushes it ``interval`` further and is within the limit while the TAT stays
within ``burst`` intervals of now. "30 a minute" lets 30 through at once, then one every 2 s,
and a client costs one number of memory whatever it sends.

- :meth:`KeyedLimiter.take` consumes only when within the limit (searches, embeddings): a
  refused request costs its client nothing, so one that honours ``Retry-After`` is served then.
- :meth:`KeyedLimiter.record` always counts (failed sign-ins: a guess answered 429 was still
  checked), with the TAT capped ``2 * burst`` intervals ahead, so a key is released at most one
  window after its last failure.

With Redis each key is one string holding the TAT, updated by a Lua script on Redis's clock, so
every process and machine shares the limit; without Redis, or while it is down, a bounded map in
this process. :class:`MinuteCounts` keeps per-minute event counts the same two ways (the
console's figures). :func:`client_key` names a client: its IPv4 address, or the /64 of an IPv6
one (one subscriber's share, which an attacker holds whole).
"""

from __future__ import annotations

import collections
import ipaddress
import math
import time

import redis.asyncio as aioredis

from clipembed.embedding.cache import RedisLink

MAX_LOCAL_KEYS = 100_000  # clients remembered in process; the least recently seen go first
COUNT_TTL = 2 * 3600  # seconds a per-minute count lives in Redis
IPV6_PREFIX = 64  # IPv6 clients are counted by network: a host holds a whole /64

_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local force = ARGV[3] == '1'
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local new = math.max(tat, now) + interval
if force then new = math.min(new, now + 2 * burst * interval) end
local wait = math.max(0, new - burst * interval - now)
if wait > 0 and not force then return math.ceil(wait) end
redis.call('SET', KEYS[1], math.floor(new), 'PX', math.ceil(new - now) + 1000)
return math.ceil(wait)
"""


def gcra(
    tat: float, now: float, *, interval: float, burst: int, force: bool = False
) -> tuple[float, float]:
    """One hit on a key: ``(new TAT, wait)``; ``wait`` 0 means within the limit.

    Without ``force`` a hit over the limit leaves the TAT as it was; with it the hit counts
    anyway, the TAT capped at ``2 * burst`` intervals ahead. Times in any one unit.
    """
    new = max(tat, now) + interval
    if force:
        new = min(new, now + 2 * burst * interval)
    wait = max(0.0, new - burst * interval - now)
    if force:
        return new, wait
    if wait > 0:
        return tat, wait
    return new, 0.0


def client_key(address: str) -> str:
    """The key a client is limited under: the IPv4 address, the /64 of an IPv6 one, else as is."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]  # "unknown" (no peer address), or a unix socket's name
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/{IPV6_PREFIX}", strict=False))
    return str(ip)


class KeyedLimiter:
    """``rate`` hits per second per key, ``burst`` at once; a rate of 0 means no limit."""

    def __init__(
        self,
        name: str,
        *,
        rate: float,
        burst: int,
        link: RedisLink | None = None,
        prefix: str = "clipembed:",
        max_keys: int = MAX_LOCAL_KEYS,
    ) -> None:
        self.name = name
        self.enabled = rate > 0
        self.interval_ms = 1000.0 / rate if rate > 0 else 0.0
        self.burst = max(1, burst)
        self.link = link
        self.prefix = f"{prefix}limit:{name}:"
        self.max_keys = max_keys
        self._local: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._script = link.client.register_script(_SCRIPT) if link is not None else None

    def __repr__(self) -> str:
        per_s = 1000 / self.interval_ms if self.enabled else 0
        return (
            f"KeyedLimiter({self.name!r}, rate={per_s:g}/s, burst={self.burst}, "
            f"shared={self.link is not None})"
        )

    async def take(self, key: str) -> float:
        """Seconds until ``key`` may go (0: now, and the hit is counted)."""
        return await self._hit(key, force=False)

    async def record(self, key: str) -> float:
        """Count a hit on ``key`` whatever the limit says; seconds it is over the limit by."""
        return await self._hit(key, force=True)

    async def _hit(self, key: str, *, force: bool) -> float:
        if not self.enabled:
            return 0.0
        if self.link is not None and self._script is not None:
            script = self._script
            args = [self.interval_ms, self.burst, "1" if force else "0"]

            async def run(_: object) -> float:
                return float(await script(keys=[self.prefix + key], args=args))

            shared = await self.link.call(run, -1.0)
            if shared >= 0:
                return shared / 1000
        return self._hit_local(key, force=force, now=time.monotonic() * 1000) / 1000

    def _hit_local(self, key: str, *, force: bool, now: float) -> float:
        tat, wait = gcra(
            self._local.get(key, 0.0), now, interval=self.interval_ms, burst=self.burst, force=force
        )
        self._local[key] = tat
        self._local.move_to_end(key)
        while len(self._local) > self.max_keys:  # a spray of addresses: forget the oldest
            self._local.popitem(last=False)
        return wait


def retry_after(wait_seconds: float) -> str:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(wait_seconds)))


class MinuteCounts:
    """Events per minute, summed over a recent window (the console's figures)."""

    def __init__(
        self, name: str, *, link: RedisLink | None = None, prefix: str = "clipembed:"
    ) -> None:
        self.link = link
        self.prefix = f"{prefix}count:{name}:"
        self._local: dict[int, int] = {}

    @staticmethod
    def _minute(now: float | None = None) -> int:
        return int((time.time() if now is None else now) // 60)

    async def add(self, n: int = 1, *, now: float | None = None) -> None:
        minute = self._minute(now)
        self._local[minute] = self._local.get(minute, 0) + n
        for old in [m for m in self._local if m < minute - 60]:
            del self._local[old]
        if self.link is not None:
            key = f"{self.prefix}{minute}"

            async def run(client: aioredis.Redis) -> None:
                pipe = client.pipeline(transaction=False)
                pipe.incrby(key, n)
                pipe.expire(key, COUNT_TTL)
                await pipe.execute()

            await self.link.call(run, None)

    async def last(self, minutes: int = 60, *, now: float | None = None) -> int:
        """Events in the last ``minutes`` minutes (this one included): every process's, with Redis."""
        current = self._minute(now)
        window = range(current - minutes + 1, current + 1)
        if self.link is not None:
            keys = [f"{self.prefix}{m}" for m in window]

            async def run(client: aioredis.Redis) -> int:
                values = await client.mget(keys)
                return sum(int(v) for v in values if v is not None)

            shared = await self.link.call(run, -1)
            if shared >= 0:
                return shared
        return sum(self._local.get(m, 0) for m in window)

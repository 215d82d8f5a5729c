"""Requests- and tokens-per-minute limiting, shared by every process through Redis.

The algorithm is GCRA (the "virtual scheduling" form of a leaky bucket) on two budgets at once:
each budget keeps a *theoretical arrival time*; a request may go when both are in the past, and
then pushes them forward by ``1 / rpm`` and ``tokens / tpm`` minutes. Requests are therefore
spread evenly instead of bursting at the start of each minute, which is what a provider that
smooths its limits within the minute wants, and no sliding minute ever holds more than the
limit plus one request (so the effective limits are set a hair under the configured ones).

The state lives in one Redis hash updated by a Lua script that uses Redis's own clock, so any
number of processes on any number of machines share one limit. Without Redis (or while it is
down) each process limits itself with the same algorithm in memory.

The provider corrects us: a 429's ``retry-after`` blocks every process sharing the limit for
that long; ``x-ratelimit-limit-*`` below the configured limits replaces them (the key's real
tier wins); and a low ``x-ratelimit-remaining-*`` holds requests until enough is back
(:func:`hold_seconds`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid

from clipembed.embedding.cache import RedisLink
from clipembed.embedding.providers.base import RateLimitInfo

logger = logging.getLogger(__name__)

MAX_SLEEP = 5.0  # seconds: re-check at least this often (another process may block or free us)
KEY_TTL_MS = 10 * 60 * 1000  # state expires once idle for ten minutes
REQUEST_MARGIN = 1  # requests below the configured rpm (GCRA can add one per minute)
TOKEN_SAFETY = 0.98  # fraction of the configured tpm actually used

#: Search's queries go first (issue 18): a query that waits for the budget registers in a sorted
#: set (KEYS[2], member -> expiry), and bulk work yields while any live query is registered. One
#: budget for both, so bulk work uses all of it when no query waits, and a query takes the next
#: free slot, whatever bulk work would have done with it.
QUERY_WAIT_TTL_MS = 3_000  # a registration lives this long unless refreshed (a crashed waiter)
BULK_YIELD_MS = 10  # how long bulk work waits before looking again while queries wait

_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local key = KEYS[1]
local waiting = KEYS[2]
local op = ARGV[1]
if op == 'block' then
  local until_ms = now + tonumber(ARGV[2])
  local blocked = tonumber(redis.call('HGET', key, 'blocked') or '0')
  if until_ms > blocked then redis.call('HSET', key, 'blocked', until_ms) end
  redis.call('PEXPIRE', key, tonumber(ARGV[3]))
  return 0
end
if op == 'leave' then
  redis.call('ZREM', waiting, ARGV[2])
  return 0
end
local req_interval = tonumber(ARGV[2])
local tok_interval = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local role = ARGV[6]
local member = ARGV[7]
if role == 'query' then
  redis.call('ZADD', waiting, now + tonumber(ARGV[8]), member)
  redis.call('PEXPIRE', waiting, tonumber(ARGV[8]))
elseif role == 'bulk' then
  redis.call('ZREMRANGEBYSCORE', waiting, '-inf', now)
  if redis.call('ZCARD', waiting) > 0 then return tonumber(ARGV[9]) end
end
local st = redis.call('HMGET', key, 'req', 'tok', 'blocked')
local req = tonumber(st[1] or '0') or 0
local tok = tonumber(st[2] or '0') or 0
local blocked = tonumber(st[3] or '0') or 0
local wait = math.max(blocked - now, req - now, tok - now, 0)
if wait > 0 then return math.ceil(wait) end
redis.call('HSET', key, 'req', math.max(req, now) + req_interval, 'tok', math.max(tok, now) + cost * tok_interval)
redis.call('PEXPIRE', key, tonumber(ARGV[5]))
if role == 'query' then redis.call('ZREM', waiting, member) end
return 0
"""


@dataclasses.dataclass
class GcraState:
    """The in-memory twin of the Redis hash (times in milliseconds of a monotonic clock)."""

    req: float = 0.0
    tok: float = 0.0
    blocked: float = 0.0
    #: queries waiting for this budget (member -> expiry): bulk work yields to them
    waiting: dict[str, float] = dataclasses.field(default_factory=dict)

    def try_acquire(
        self,
        now: float,
        req_interval: float,
        tok_interval: float,
        cost: int,
        *,
        role: str = "any",
        member: str = "",
    ) -> float:
        """0 and reserve if allowed now; otherwise the milliseconds to wait (reserving nothing).

        ``role``: ``query`` registers as waiting (bulk work yields to it), ``bulk`` yields while
        a live query waits, ``any`` neither."""
        if role == "query":
            self.waiting[member] = now + QUERY_WAIT_TTL_MS
        elif role == "bulk":
            for m in [m for m, expiry in self.waiting.items() if expiry <= now]:
                del self.waiting[m]
            if self.waiting:
                return float(BULK_YIELD_MS)
        wait = max(self.blocked - now, self.req - now, self.tok - now, 0.0)
        if wait > 0:
            return wait
        self.req = max(self.req, now) + req_interval
        self.tok = max(self.tok, now) + cost * tok_interval
        if role == "query":
            self.waiting.pop(member, None)
        return 0.0

    def leave(self, member: str) -> None:
        self.waiting.pop(member, None)

    def block(self, now: float, ms: float) -> None:
        self.blocked = max(self.blocked, now + ms)


def intervals(requests_per_minute: int, tokens_per_minute: int) -> tuple[float, float]:
    """Milliseconds per request and per token that keep under both per-minute limits.

    GCRA lets one request through at the very start of a window on top of the steady rate, so
    the request rate is set one below the limit (for limits above 2), and tokens use
    ``TOKEN_SAFETY`` of theirs.
    """
    rpm = (
        max(1, requests_per_minute - REQUEST_MARGIN)
        if requests_per_minute > 2
        else requests_per_minute
    )
    return 60_000.0 / max(1, rpm), 60_000.0 / max(1.0, tokens_per_minute * TOKEN_SAFETY)


def hold_seconds(info: RateLimitInfo, *, reserve_requests: int = 1, next_tokens: int = 0) -> float:
    """How long the provider's ``x-ratelimit-*`` headers say to hold every request (0: go on).

    "Low" means fewer requests left than may be in flight at once (``reserve_requests``), or
    fewer tokens left than the next request is likely to carry. The hold is the time to regain
    what is missing at the provider's own rate (``60 s * missing / limit``), capped by the
    reset the provider announced: OpenAI's buckets refill continuously and announce the time
    to refill *completely*, so holding for the whole reset would idle us for up to a minute
    when one request's worth is back within a second. Without the limit, the reset is all
    there is to go by.
    """
    holds = [0.0]
    for remaining, reserve, limit, reset in (
        (info.remaining_requests, reserve_requests, info.limit_requests, info.reset_requests),
        (info.remaining_tokens, next_tokens, info.limit_tokens, info.reset_tokens),
    ):
        if remaining is None or reset is None or reset <= 0 or remaining >= max(1, reserve):
            continue
        missing = max(1, reserve) - remaining
        regain = 60.0 * missing / limit if limit else reset
        holds.append(min(reset, regain))
    return max(holds)


class RateLimiter:
    """``await acquire(tokens)`` before each request; ``observe(info)`` after each answer."""

    def __init__(
        self,
        *,
        requests_per_minute: int,
        tokens_per_minute: int,
        link: RedisLink | None = None,
        key: str = "clipembed:ratelimit",
        enabled: bool = True,
        reserve_requests: int = 1,
        share: float = 1.0,
        role: str = "any",
        state: GcraState | None = None,
    ) -> None:
        self.enabled = enabled  # a local model has no provider limits to respect
        #: ``query`` goes first: ``bulk`` limiters on the same key yield while one waits
        self.role = role
        #: the part of the provider's budget this limiter may use (bulk work leaves the query
        #: lane its reserve, EMBEDDING_QUERY_RESERVE); applied to configured and announced limits
        self.share = share
        requests_per_minute = max(1, int(requests_per_minute * share))
        tokens_per_minute = max(1, int(tokens_per_minute * share))
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self.req_interval, self.tok_interval = intervals(requests_per_minute, tokens_per_minute)
        self.reserve_requests = reserve_requests  # requests that may be in flight at once
        self.link = link
        self.key = key
        # without Redis, limiters given one ``state`` share one budget in this process (the
        # bulk and query limiters of a service); with Redis the key shares it everywhere
        self._local = state if state is not None else GcraState()
        self._script = link.client.register_script(_SCRIPT) if link is not None else None
        self.waited_seconds = 0.0

    def __repr__(self) -> str:
        return (
            f"RateLimiter(rpm={self.requests_per_minute}, tpm={self.tokens_per_minute}, "
            f"shared={self.link is not None})"
        )

    def _now_ms(self) -> float:
        return time.monotonic() * 1000

    @property
    def waiting_key(self) -> str:
        return f"{self.key}:queries-waiting"

    async def _try(self, cost: int, member: str) -> float:
        if self.link is not None and self._script is not None:
            script = self._script
            args: list[str | float | int] = [
                "acquire",
                self.req_interval,
                self.tok_interval,
                cost,
                KEY_TTL_MS,
                self.role,
                member,
                QUERY_WAIT_TTL_MS,
                BULK_YIELD_MS,
            ]

            async def run(_: object) -> float:
                return float(await script(keys=[self.key, self.waiting_key], args=args))

            result = await self.link.call(run, -1.0)
            if result >= 0:
                return result
        return self._local.try_acquire(
            self._now_ms(),
            self.req_interval,
            self.tok_interval,
            cost,
            role=self.role,
            member=member,
        )

    async def acquire(self, tokens: int) -> None:
        """Wait until one request carrying ``tokens`` tokens may be sent, and reserve it.

        A ``query`` limiter is registered as waiting meanwhile (bulk work on the same budget
        yields to it) and unregistered however the wait ends (reserved, timed out, cancelled).
        """
        if not self.enabled:
            return
        member = uuid.uuid4().hex if self.role == "query" else ""
        reserved = False
        try:
            while True:
                wait_ms = await self._try(tokens, member)
                if wait_ms <= 0:
                    reserved = True
                    return
                sleep = min(wait_ms / 1000, MAX_SLEEP)
                if self.role == "query":
                    # stay registered: refresh before the registration expires
                    sleep = min(sleep, QUERY_WAIT_TTL_MS / 2000)
                self.waited_seconds += sleep
                await asyncio.sleep(sleep)
        finally:
            if member and not reserved:
                await self._leave(member)

    async def _leave(self, member: str) -> None:
        self._local.leave(member)
        if self.link is not None and self._script is not None:
            script = self._script

            async def run(_: object) -> None:
                await script(keys=[self.key, self.waiting_key], args=["leave", member])

            await self.link.call(run, None)

    async def block(self, seconds: float) -> None:
        """Hold every process sharing this limit for ``seconds`` (a 429's retry-after)."""
        if not self.enabled:
            return
        ms = max(0.0, seconds) * 1000
        self._local.block(self._now_ms(), ms)
        if self.link is not None and self._script is not None:
            script = self._script

            async def run(_: object) -> None:
                await script(keys=[self.key, self.waiting_key], args=["block", ms, KEY_TTL_MS])

            await self.link.call(run, None)

    def adopt(self, info: RateLimitInfo) -> None:
        """Use the provider's announced limits when they are tighter than the configured ones.

        A key on a lower tier than ``EMBEDDING_REQUESTS_PER_MINUTE`` assumes would otherwise
        meet a 429 for every request over the real limit; the headers tell us the truth.
        """
        rpm = self.requests_per_minute
        tpm = self.tokens_per_minute
        announced_rpm = int((info.limit_requests or 0) * self.share)
        announced_tpm = int((info.limit_tokens or 0) * self.share)
        if 0 < announced_rpm < rpm:
            rpm = announced_rpm
        if 0 < announced_tpm < tpm:
            tpm = announced_tpm
        if (rpm, tpm) != (self.requests_per_minute, self.tokens_per_minute):
            logger.info(
                "the provider's rate limit is lower than configured: using it",
                extra={"requests_per_minute": rpm, "tokens_per_minute": tpm},
            )
            self.requests_per_minute, self.tokens_per_minute = rpm, tpm
            self.req_interval, self.tok_interval = intervals(rpm, tpm)

    async def observe(self, info: RateLimitInfo | None, *, next_tokens: int = 0) -> None:
        """Respect what the provider said: adopt a tighter limit, and hold when a budget is low."""
        if info is None or not self.enabled:
            return
        self.adopt(info)
        # Where the provider announced its limit and we pace at or under it, our own pacing
        # already keeps the budget from running out: at full speed "remaining" sits at 0 by
        # design, and holding on it added one provider latency to every request (0.84 of the
        # ceiling instead of 0.99, docs/benchmarks.md). The hold is for budgets we cannot pace.
        if info.limit_requests and self.requests_per_minute <= info.limit_requests * self.share:
            info = dataclasses.replace(info, remaining_requests=None)
        if info.limit_tokens and self.tokens_per_minute <= info.limit_tokens * self.share:
            info = dataclasses.replace(info, remaining_tokens=None)
        hold = hold_seconds(info, reserve_requests=self.reserve_requests, next_tokens=next_tokens)
        if hold > 0:
            await self.block(hold)

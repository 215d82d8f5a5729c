"""The throttle on failed sign-ins and wrong Bearer tokens, which never stands in a right token's way.

The first console checked the throttle before the token: after five wrong tokens from an
address the right one got 429 too, so five requests a minute kept every admin behind one proxy
out (issue 22). Now the token is always checked first, and the throttle only decides what a
*failure* is answered:

- a valid token (a sign-in, or ``Authorization: Bearer`` on /status, /metrics or any /admin
  route) is let in, whatever failed before it from that address or from anywhere;
- a failure is counted per client address (``CLIPEMBED_AUTH_FAILURES_PER_MINUTE``, 5) and in
  all (``..._GLOBAL``, 100), with GCRA (:mod:`clipembed.client_limits`): shared by every
  process through Redis where there is one, in this process otherwise, like the provider's
  rate limit. Within both limits it is a 401; past either, a 429 with ``Retry-After``;
- every failure is a Prometheus count (``clipembed_auth_failures_total{kind, answer}``) and a
  figure on the console's overview (failures in the last hour, and how many were throttled);
  a 401 is also a log line, so the log holds at most the global limit of them per minute,
  however many addresses a guesser uses.

Why not refuse to check a token while an address is throttled? Because a throttle that does
not check cannot tell the admin from the guesser, which is the lock-out above. What it gives
up is nothing: a token is 256 random bits, out of reach at any rate a server answers, so the
throttle's work is to tell clients to back off, keep the log readable and make a guessing
campaign visible (docs/security.md).
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import HTTPConnection

from clipembed import client_limits, metrics
from clipembed.embedding.cache import RedisLink
from clipembed.settings import Settings

logger = logging.getLogger(__name__)

KINDS = ("signin", "bearer")
EVERYONE = "all"  # the key of the global limit


class AuthThrottle:
    """Counts failures per client and in all; says how long a failing client should wait."""

    def __init__(
        self,
        *,
        per_client: int,
        overall: int,
        link: RedisLink | None = None,
        prefix: str = "clipembed:",
    ) -> None:
        # "N a minute": N at once, then one every 60/N s
        self.per_client = client_limits.KeyedLimiter(
            "auth-failures", rate=per_client / 60, burst=per_client, link=link, prefix=prefix
        )
        self.overall = client_limits.KeyedLimiter(
            "auth-failures-all", rate=overall / 60, burst=overall, link=link, prefix=prefix
        )
        self.failures = client_limits.MinuteCounts("auth-failures", link=link, prefix=prefix)
        self.throttled = client_limits.MinuteCounts("auth-throttled", link=link, prefix=prefix)

    @classmethod
    def from_settings(cls, settings: Settings, link: RedisLink | None) -> AuthThrottle:
        return cls(
            per_client=settings.clipembed_auth_failures_per_minute,
            overall=settings.clipembed_auth_failures_per_minute_global,
            link=link,
            prefix=settings.redis_key_prefix,
        )

    def __repr__(self) -> str:
        return f"AuthThrottle({self.per_client!r}, {self.overall!r})"

    async def failed(self, client: str, kind: str) -> float:
        """Count one failure from ``client``: 0 to answer 401, else seconds for Retry-After."""
        wait = max(
            await self.per_client.record(client_limits.client_key(client)),
            await self.overall.record(EVERYONE),
        )
        answer = "throttled" if wait > 0 else "refused"
        metrics.AUTH_FAILURES.labels(kind, answer).inc()
        await self.failures.add()
        if wait > 0:
            await self.throttled.add()
        else:
            logger.warning(
                "sign-in refused" if kind == "signin" else "wrong Bearer token",
                extra={"client": client},
            )
        return wait

    async def figures(self) -> dict[str, Any]:
        """The console's figures: failures in the last hour, and those answered 429."""
        return {
            "failures_last_hour": await self.failures.last(60),
            "throttled_last_hour": await self.throttled.last(60),
            "per_client_per_minute": self.per_client.burst,
            "overall_per_minute": self.overall.burst,
        }


def of(conn: HTTPConnection) -> AuthThrottle:
    """The app's throttle (set by its lifespan); an in-process one on an app without it."""
    state = conn.app.state
    found = getattr(state, "auth_throttle", None)
    if found is None:
        found = AuthThrottle.from_settings(state.runtime.settings, None)
        state.auth_throttle = found
    assert isinstance(found, AuthThrottle)
    return found

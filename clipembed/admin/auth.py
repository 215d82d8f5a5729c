"""Access control for the console: admin tokens, browser sessions, CSRF.

- **Tokens** are 32 random bytes (``ce_`` + urlsafe base64), printed once by
  ``clipembed admin token create --name NAME`` and stored as SHA-256 digests. A digest is enough:
  a random 256-bit token cannot be guessed, so a slow password hash would add nothing. The
  digest is looked up by index, then compared with :func:`hmac.compare_digest`.
- **API clients** send ``Authorization: Bearer TOKEN`` on any admin route, pages included.
- **Browsers** sign in once with a token and get a session: an HttpOnly, SameSite=Strict cookie
  holding a random id (stored as a digest), valid ``CLIPEMBED_ADMIN_SESSION_HOURS``; every
  state-changing form carries the session's CSRF token, compared in constant time.
- **Failed attempts** (sign-ins, Bearer tokens) are throttled by :mod:`clipembed.admin.throttle`
  after the token is checked, never before: a valid token always gets in. The sign-in takes
  only the token: a wrong one never tells whether any name exists.
- Without any token, the console says how to create one: it is never open.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import secrets
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from clipembed import errors
from clipembed.store import admin_tables

TOKEN_PREFIX = "ce_"
SESSION_COOKIE = "clipembed_session"
MAX_NAME = 100


class AuthError(errors.ClipembedError):
    """No valid credentials (the routes answer 401, or redirect a browser to sign in)."""


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who is asking: the token's name, and the session's CSRF token for a browser."""

    token_id: int
    name: str
    csrf: str | None = None  # None for a Bearer client: no cookie, so no CSRF to check


# ------------------------------------------------------------------------------ tokens


async def create_token(pool: AsyncConnectionPool, name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME:
        raise errors.ConfigurationError(f"a token name is 1-{MAX_NAME} characters")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    try:
        async with pool.connection() as conn:
            await conn.execute(admin_tables.CREATE_TOKEN, (name, digest(token)))
    except psycopg.errors.UniqueViolation:
        raise errors.ConfigurationError(f"a token named {name!r} exists already") from None
    return token


async def list_tokens(pool: AsyncConnectionPool) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        rows = await (await conn.execute(admin_tables.LIST_TOKENS)).fetchall()
    return [
        {
            "name": r[0],
            "created_at": r[1].isoformat(),
            "last_used_at": r[2].isoformat() if r[2] else None,
            "revoked_at": r[3].isoformat() if r[3] else None,
        }
        for r in rows
    ]


async def revoke_token(pool: AsyncConnectionPool, name: str) -> bool:
    """Revoke the token and end its sessions; False when no live token has that name."""
    async with pool.connection() as conn:
        row = await (await conn.execute(admin_tables.REVOKE_TOKEN, (name,))).fetchone()
        if row is not None:
            await conn.execute(admin_tables.END_TOKEN_SESSIONS, (row[0],))
    return row is not None


async def any_token(pool: AsyncConnectionPool) -> bool:
    async with pool.connection() as conn:
        row = await (await conn.execute(admin_tables.ANY_TOKEN)).fetchone()
    return bool(row and row[0])


async def check_token(pool: AsyncConnectionPool, token: str) -> Principal:
    wanted = digest(token)
    async with pool.connection() as conn:
        row = await (await conn.execute(admin_tables.FIND_TOKEN, (wanted,))).fetchone()
        if row is None or not hmac.compare_digest(bytes(row[2]), wanted):
            raise AuthError("invalid token")
        await conn.execute(admin_tables.TOKEN_USED, (row[0],))
    return Principal(int(row[0]), str(row[1]))


# ------------------------------------------------------------------------------ sessions


async def open_session(
    pool: AsyncConnectionPool, principal: Principal, *, hours: float
) -> tuple[str, str]:
    """A new session for a signed-in browser: (cookie value, CSRF token)."""
    session = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(hours=hours)
    async with pool.connection() as conn:
        await conn.execute(admin_tables.PRUNE_SESSIONS)
        await conn.execute(
            admin_tables.CREATE_SESSION, (digest(session), principal.token_id, csrf, expires)
        )
    return session, csrf


async def check_session(pool: AsyncConnectionPool, session: str) -> Principal:
    async with pool.connection() as conn:
        row = await (await conn.execute(admin_tables.FIND_SESSION, (digest(session),))).fetchone()
    if row is None:
        raise AuthError("no session, or it expired")
    return Principal(int(row[0]), str(row[1]), csrf=str(row[2]))


async def close_session(pool: AsyncConnectionPool, session: str) -> None:
    async with pool.connection() as conn:
        await conn.execute(admin_tables.END_SESSION, (digest(session),))


def csrf_ok(principal: Principal, submitted: str | None) -> bool:
    """A Bearer client needs none; a browser's form must carry its session's token."""
    if principal.csrf is None:
        return True
    return bool(submitted) and hmac.compare_digest(principal.csrf, submitted or "")

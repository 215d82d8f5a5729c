"""Admin tokens for tests that call protected routes (/status, /metrics, /admin)."""

from __future__ import annotations

import secrets

import psycopg

from clipembed.admin import auth


def admin_token(database_url: str, name: str | None = None) -> str:
    """A new admin token stored as the CLI stores it (SHA-256 digest); returns the secret."""
    token = auth.TOKEN_PREFIX + secrets.token_urlsafe(32)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO clipembed_admin_tokens (name, token_hash) VALUES (%s, %s)",
            (name or f"test-{secrets.token_hex(4)}", auth.digest(token)),
        )
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}

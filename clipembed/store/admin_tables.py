"""The console's tables: admin tokens, sessions, and the failures page's reads."""

from __future__ import annotations

CREATE_TOKEN = "INSERT INTO clipembed_admin_tokens (name, token_hash) VALUES (%s, %s)"

LIST_TOKENS = (
    "SELECT name, created_at, last_used_at, revoked_at FROM clipembed_admin_tokens ORDER BY id"
)

REVOKE_TOKEN = """
UPDATE clipembed_admin_tokens SET revoked_at = now()
WHERE name = %s AND revoked_at IS NULL RETURNING id
"""

ANY_TOKEN = "SELECT EXISTS (SELECT 1 FROM clipembed_admin_tokens WHERE revoked_at IS NULL)"

FIND_TOKEN = """
SELECT id, name, token_hash FROM clipembed_admin_tokens
WHERE token_hash = %s AND revoked_at IS NULL
"""

TOKEN_USED = "UPDATE clipembed_admin_tokens SET last_used_at = now() WHERE id = %s"

CREATE_SESSION = """
INSERT INTO clipembed_admin_sessions (id_hash, token_id, csrf, expires_at) VALUES (%s, %s, %s, %s)
"""

FIND_SESSION = """
SELECT t.id, t.name, s.csrf FROM clipembed_admin_sessions s
JOIN clipembed_admin_tokens t ON t.id = s.token_id
WHERE s.id_hash = %s AND s.expires_at > now() AND t.revoked_at IS NULL
"""

END_SESSION = "DELETE FROM clipembed_admin_sessions WHERE id_hash = %s"

END_TOKEN_SESSIONS = "DELETE FROM clipembed_admin_sessions WHERE token_id = %s"

PRUNE_SESSIONS = "DELETE FROM clipembed_admin_sessions WHERE expires_at < now()"

#: The dead letters, newest first, with their clips (the failures page).
DEAD_LETTERS = """
SELECT d.clip_id, c.title, c.broadcaster_name, d.attempts, d.last_error, d.failed_at
FROM embedding_dead_letters d JOIN clips c ON c.id = d.clip_id
ORDER BY d.failed_at DESC, d.clip_id LIMIT %s
"""

"""No secret in a repr, a log line or an error: URLs, keys and the settings object."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clipembed import redaction, settings


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:s3cr3t@db:5432/clips", "postgresql://app:***@db:5432/clips"),
        ("redis://:hunter2@cache:6379/0", "redis://:***@cache:6379/0"),
        (
            "postgresql://db/clips?user=app&password=s3cr3t",
            "postgresql://db/clips?user=app&password=***",
        ),
        ("postgresql://db/clips", "postgresql://db/clips"),
        (None, None),
    ],
)
def test_urls_lose_their_passwords(url, shown):
    assert redaction.redact_url(url) == shown


def test_messages_lose_keys_and_url_passwords():
    message = "failed for sk-proj-abcdefghijklmnop at postgresql://u:pw@h/d with my-own-secret"
    out = redaction.scrub(message, "my-own-secret")
    assert "abcdefghijklmnop" not in out and ":pw@" not in out and "my-own-secret" not in out


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=6, max_size=30))
def test_any_password_in_a_url_is_hidden(password):
    password = password.replace("@", "").replace("/", "").replace(" ", "")
    if len(password) < 4 or ":" in password or "\n" in password:
        return
    url = f"postgresql://user:{password}@host:5432/db"
    assert password not in (redaction.redact_url(url) or "")


def test_settings_repr_shows_no_secret():
    cfg = settings.Settings(
        _env_file=None,
        openai_api_key="sk-live-abcdefghijkl",
        database_url="postgresql://app:s3cr3t@db/clips",
        redis_url="redis://:hunter2@cache:6379/0",
    )
    text = repr(cfg) + str(cfg)
    for secret in ("abcdefghijkl", "s3cr3t", "hunter2"):
        assert secret not in text
    assert cfg.redis_url_value == "redis://:hunter2@cache:6379/0"

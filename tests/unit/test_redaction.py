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


# --- secret parameters (issue 22) -------------------------------------------------------------

SECRET_PARAMS = [
    "api_key",
    "api-key",
    "apikey",
    "access_token",
    "token",
    "key",
    "sig",
    "signature",
    "code",
    "password",
    "passwd",
    "secret",
    "client_secret",
    "refresh_token",
    "X-Amz-Signature",
    "x-api-key",
    "subscription-key",
    "session_id",
    "auth",
]
PLAIN_PARAMS = ["q", "mode", "limit", "offset", "game", "from", "to", "user", "model", "page"]

# what a query value may hold unescaped, and what it may hold percent-escaped
VALUE = st.text(
    alphabet=st.sampled_from(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~%+!$'()*,:@/"
    ),
    min_size=1,
    max_size=40,
)


def casings(name: str):
    """``name`` in any mix of upper and lower case."""
    return st.tuples(*[st.sampled_from(sorted({c.lower(), c.upper()})) for c in name]).map("".join)


@given(
    name=st.sampled_from(SECRET_PARAMS).flatmap(casings),
    value=VALUE,
    before=st.lists(st.tuples(st.sampled_from(PLAIN_PARAMS), VALUE), max_size=3),
    after=st.lists(st.tuples(st.sampled_from(PLAIN_PARAMS), VALUE), max_size=3),
)
def test_a_secret_parameter_is_masked_in_any_case_and_its_neighbours_kept(
    name, value, before, after
):
    params = [*before, (name, value), *after]
    url = "https://api.example.com/v1/embeddings?" + "&".join(f"{k}={v}" for k, v in params)
    shown = redaction.redact_url(url)
    query = shown.split("?", 1)[1].split("&")
    assert query[len(before)] == f"{name}={redaction.MASK}"
    assert query[: len(before)] == [f"{k}={v}" for k, v in before]
    assert query[len(before) + 1 :] == [f"{k}={v}" for k, v in after]
    assert redaction.redact_params(url.split("?", 1)[1], url=True) == shown.split("?", 1)[1]


@given(st.sampled_from(PLAIN_PARAMS), VALUE)
def test_plain_parameters_are_left_alone(name, value):
    url = f"http://h/search?{name}={value}"
    assert redaction.redact_url(url) == url


@given(st.text(max_size=300))
def test_scrub_takes_any_text_and_is_idempotent(text):
    once = redaction.scrub(text)
    assert redaction.scrub(once) == once
    assert redaction.redact_url(redaction.redact_url(text)) == redaction.redact_url(text)


@given(st.sampled_from(SECRET_PARAMS), VALUE.filter(lambda v: len(v) >= 4))
def test_a_secret_parameter_quoted_in_a_message_or_log_line_is_masked(name, value):
    value = "S3" + value
    for text in (
        f"request to https://h/v1?{name}={value} failed",
        f'{{"url": "https://h/v1?x=1&{name}={value}"}}',
        f"12:00:00 INFO clipembed.access request path=/search?q=a&{name}={value} status=200",
    ):
        assert value not in redaction.scrub(text)


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        ("Authorization: Bearer ce_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", "abcdefghijklm"),
        ("sent ce_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG to /status", "abcdefghijklm"),
        ("basic dXNlcjpodW50ZXIyMjI= refused", "dXNlcjpodW50"),
        ("postgresql://app:p@ss/word@db/x", "p@ss"),
        ('{"url": "redis://:hunter2@cache:6379/0"}', "hunter2"),
    ],
)
def test_tokens_and_credentials_in_free_text_are_masked(text, hidden):
    assert hidden not in redaction.scrub(text)


def test_log_lines_are_redacted_and_a_value_cannot_forge_a_field():
    import logging

    from clipembed import logs

    record = logging.LogRecord("x", logging.INFO, "f", 1, "GET /v1?api_key=K3Y-SECRET", (), None)
    record.client = "6.6.6.6 token=sec by=sec"
    record.url = "https://u:pw-SECRET@h/v1?sig=SIG-SECRET"
    for fmt in ("text", "json"):
        line = logs.formatter(fmt).format(record)
        assert "SECRET" not in line and "pw-" not in line, fmt
    text = logs.formatter("text").format(record)
    assert 'client="6.6.6.6 token=sec by=sec"' in text  # one quoted field, not three


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://h/v1?x=1;token=abc&q=2", "https://h/v1?x=1;token=***&q=2"),
        ("https://h/v1?password=a;b&q=2", "https://h/v1?password=***&q=2"),
        ("https://h/v1?api_key=it's a key#frag", "https://h/v1?api_key=***#frag"),
        ("https://h/v1?API%5FKEY=k", "https://h/v1?API%5FKEY=***"),
        ("https://h/v1?q=token&mode=key", "https://h/v1?q=token&mode=key"),
    ],
)
def test_url_parameters_end_only_at_a_separator(url, shown):
    assert redaction.redact_url(url) == shown

"""The one place that makes secrets safe to print: URLs, messages and keys.

Every log line, error message and repr that could carry a connection URL or an API key goes
through here: :func:`redact_url` for URLs (a password in the userinfo or in a query parameter
such as ``?password=``), :func:`scrub` for free text that may echo a key (a provider's error).
Settings hold the secrets themselves as ``SecretStr`` (``DATABASE_URL``, ``REDIS_URL``,
``OPENAI_API_KEY``), so a settings repr never shows them either.
"""

from __future__ import annotations

import re

_USERINFO_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@/]*@")
_QUERY_SECRET = re.compile(r"([?&](?:password|passwd|pass|key|token|secret)=)[^&#\s]*", re.I)
#: OpenAI-style keys (sk-..., sk-proj-...), anywhere in a text: the first 4 characters stay
_KEYLIKE = re.compile(r"(sk-[A-Za-z0-9_\-]{4})[A-Za-z0-9_\-]+")
MASK = "***"


_USERINFO = re.compile(r"(://)[^/@\s]*@")


def redact_url(url: str | None, *, keep_user: bool = True) -> str | None:
    """``url`` with any password replaced by ``***`` (None stays None).

    ``keep_user=False`` hides the whole userinfo (``https://***@host``): in an API base URL the
    "user" may itself be a key.
    """
    if not url:
        return url
    if keep_user:
        url = _USERINFO_PASSWORD.sub(rf"\1{MASK}@", url)
    else:
        url = _USERINFO.sub(rf"\1{MASK}@", url)
    return _QUERY_SECRET.sub(rf"\1{MASK}", url)


def scrub(message: str, *secrets: str | None) -> str:
    """``message`` without the given secrets, key-like strings or URL passwords."""
    for secret in secrets:
        if secret:
            message = message.replace(secret, MASK)
    message = _KEYLIKE.sub(rf"\1{MASK}", message)
    return redact_url(message) or message

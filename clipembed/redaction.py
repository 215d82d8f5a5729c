"""The one place that makes secrets safe to print: URLs, query strings, messages and log lines.

Every log line (both formats of :mod:`clipembed.logs`), error message and repr that could carry a
connection URL or an API key goes through here:

- :func:`redact_url` for URLs: the password in the userinfo (or the whole userinfo) and the
  value of every *secret parameter* in the query;
- :func:`redact_params` for a bare query string (the access log, ``url=True``) or any text
  holding one;
- :func:`scrub` for free text (a provider's error, a formatted log line): secret parameters,
  URL passwords, OpenAI-style keys, admin tokens and ``Bearer``/``Basic`` credentials.

A parameter is secret when its name, compared case-insensitively with ``-``, ``.`` and spaces
read as ``_`` and percent-escapes decoded, is one of :data:`SECRET_NAMES`, contains one of
:data:`SECRET_WORDS` or ends with one of :data:`SECRET_SUFFIXES`: ``api_key``, ``API-Key``,
``apikey``, ``access_token``, ``X-Amz-Signature``, ``client_secret``, ``code``... Masking too
much costs a log reader a value; masking too little leaks a key, so the rules lean wide.

Settings hold the secrets themselves as ``SecretStr`` (``DATABASE_URL``, ``REDIS_URL``,
``OPENAI_API_KEY``), so a settings repr never shows them either. Every function here is pure,
total (never raises on any text) and idempotent.
"""

from __future__ import annotations

import re
import urllib.parse

MASK = "***"

#: parameter names that are secrets on their own (short or ambiguous ones match exactly)
SECRET_NAMES = frozenset(
    {
        "key",
        "apikey",
        "sig",
        "code",
        "pass",
        "pwd",
        "auth",
        "otp",
        "jwt",
        "session",
        "sid",
        "hmac",
        "nonce",
    }
)
#: a name containing one of these is a secret (``access_token``, ``x_api_key``, ``passwd``...)
SECRET_WORDS = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "api_key",
    "apikey",
    "access_key",
    "accesskey",
    "private_key",
    "signature",
    "credential",
    "authorization",
    "sessionid",
    "session_id",
    "cookie",
)
#: ...and so is a name ending with one of these (``subscription_key``, ``auth_code``, ``x_sig``)
SECRET_SUFFIXES = ("_key", "_sig", "_code", "_pass", "_pwd", "_auth", "_session")

# A parameter: at the start or after ?, & or ;, a name, '=', a value. A ';' belongs to the value
# unless a "name=" follows it. In a URL on its own the value runs to '&' or '#': any other
# character, quotes and spaces included, may be part of a secret. In free text it also ends at
# ASCII whitespace or a quote (a URL inside JSON or a quoted log field keeps its closing quote).
_URL_PARAM = re.compile(
    r"(?P<lead>^|[?&;])(?P<name>[^=&;#?]+)=(?P<value>(?:[^&;#]|;(?![^=&;#]+=))*)"
)
_TEXT_PARAM = re.compile(
    r"(?P<lead>^|[?&;])(?P<name>[^=&;#?\s\"'<>]+)="
    r"(?P<value>(?:[^&;#\s\"'<>]|;(?![^=&;#\s\"'<>]+=))*)",
    re.ASCII,
)
# scheme://user:password@ : the password runs to the last '@' before the path (a password may
# hold an unescaped '@'); scheme://anything@ : the whole userinfo (keep_user=False). In a URL
# on its own any other character may be part of it; in free text a URL ends at a space or quote.
_URL_PASSWORD = re.compile(r"(://[^:/@]*:)[^/]*@")
_URL_USERINFO = re.compile(r"(://)[^/]*@")
_TEXT_PASSWORD = re.compile(r"(://[^:/@?#\s\"'<>]*:)[^/?#\s\"'<>]*@", re.ASCII)
#: OpenAI-style keys (sk-..., sk-proj-...), anywhere in a text: the first 4 characters stay
_KEYLIKE = re.compile(r"(sk-[A-Za-z0-9_\-]{4})[A-Za-z0-9_\-]+")
#: clipembed's own admin tokens (``ce_`` + 43 url-safe characters)
_ADMIN_TOKEN = re.compile(r"\bce_[A-Za-z0-9_\-]{16,}")
#: credentials of an Authorization header quoted in a text
_AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=\-]{8,}")


def is_secret_name(name: str) -> bool:
    """Whether a query or form parameter called ``name`` holds a secret."""
    try:
        decoded = urllib.parse.unquote_plus(name)
    except Exception:  # never fails today; a redactor must not raise whatever it is given
        decoded = name
    normal = re.sub(r"[\s.\-]+", "_", decoded.strip().lower())
    if normal in SECRET_NAMES:
        return True
    return any(word in normal for word in SECRET_WORDS) or normal.endswith(SECRET_SUFFIXES)


def _mask_param(match: re.Match[str]) -> str:
    if not is_secret_name(match["name"]) or not match["value"]:
        return match[0]
    return f"{match['lead']}{match['name']}={MASK}"


def redact_params(text: str, *, url: bool = False) -> str:
    """``text`` with every secret parameter's value masked. ``url``: ``text`` is one URL or one
    query string, so a value runs to the next ``&`` whatever it holds."""
    return (_URL_PARAM if url else _TEXT_PARAM).sub(_mask_param, text)


def redact_url(url: str | None, *, keep_user: bool = True) -> str | None:
    """``url`` without its password and secret parameters (None stays None).

    ``keep_user=False`` hides the whole userinfo (``https://***@host``): in an API base URL the
    "user" may itself be a key.
    """
    if not url:
        return url
    pattern = _URL_PASSWORD if keep_user else _URL_USERINFO
    return redact_params(pattern.sub(rf"\1{MASK}@", url, count=1), url=True)


def scrub(message: str, *secrets: str | None) -> str:
    """``message`` without the given secrets, keys, tokens, credentials or URL passwords."""
    for secret in secrets:
        if secret:
            message = message.replace(secret, MASK)
    message = _KEYLIKE.sub(rf"\1{MASK}", message)
    message = _ADMIN_TOKEN.sub(f"ce_{MASK}", message)
    message = _AUTH_SCHEME.sub(rf"\1\2{MASK}", message)
    message = _TEXT_PASSWORD.sub(rf"\1{MASK}@", message)
    return redact_params(message)

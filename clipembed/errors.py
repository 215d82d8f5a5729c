"""The exceptions clipembed raises.

Every error clipembed raises on purpose derives from :class:`ClipembedError`, so a caller can
catch one type. Driver and SDK errors are translated at the edge that sees them
(``raise ... from exc``) so the original stays on ``__cause__`` for ``--debug``.

::

    ClipembedError
    ├── ConfigurationError        bad settings; the CLI exits 2
    ├── DatabaseError             PostgreSQL unreachable or a query failed
    │   └── SchemaError           migrations missing, or schema differs from the settings
    ├── CacheError                Redis failed (callers normally degrade to uncached)
    └── ProviderError             the embedding provider failed
        ├── RetryableProviderError    429, 5xx, timeout, connection: try again
        │   ├── RateLimitedError      429, carries the provider's retry-after
        │   ├── InvalidResponseError  wrong count, length, order, garbage or non-finite values
        │   └── QueryEmbeddingUnavailable  a search's query embedding missed its deadline
        └── PermanentProviderError    400/401/403/404: fails at once
            └── QuotaExceededError    429 insufficient_quota: no input is to blame, none will pass

An invalid response is retried (bounded by the same attempt budget): in practice it is a
transient fault of a proxy or a provider, like a 5xx, and a retry usually gets a good answer.
Nothing from an invalid response is ever stored or cached.

Messages never contain secrets: the API key is held as ``SecretStr`` and providers scrub
anything that echoes request headers.
"""

from __future__ import annotations


class ClipembedError(Exception):
    """Root of every error clipembed raises on purpose."""


class ConfigurationError(ClipembedError):
    """The settings cannot work (missing key, impossible dimensions, ...)."""


class DatabaseError(ClipembedError):
    """PostgreSQL is unreachable or a statement failed."""


class SchemaError(DatabaseError):
    """The database schema is missing or does not match the settings."""


class CacheError(ClipembedError):
    """Redis failed; the embedding service degrades to uncached on this."""


class ProviderError(ClipembedError):
    """The embedding provider failed."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class RetryableProviderError(ProviderError):
    """A transient failure: rate limited, server error, timeout or connection error."""


class RateLimitedError(RetryableProviderError):
    """HTTP 429. ``retry_after`` is the provider's hint in seconds, when it gave one."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, status_code: int | None = 429
    ) -> None:
        super().__init__(message, status_code=status_code)
        self.retry_after = retry_after


class PermanentProviderError(ProviderError):
    """A failure that will not go away by retrying (bad request, bad key, unknown model)."""


class InvalidResponseError(RetryableProviderError):
    """The provider answered, but with vectors we must not store."""


class QuotaExceededError(PermanentProviderError):
    """The account is out of quota (429 ``insufficient_quota``): every request will fail alike.

    Not a rate limit: retrying or splitting the batch (to find a poison input) only multiplies
    requests that cannot succeed, so a batch fails whole and says so.
    """


class QueryEmbeddingUnavailable(RetryableProviderError):
    """A search's query embedding missed its deadline or its provider failed.

    The message is safe for anonymous API clients: it never carries provider text.
    """

"""Configuration from the environment and an optional ``.env`` file.

The variable names are the original system's (``EMBEDDING_*``, ``OPENAI_API_KEY``,
``DATABASE_URL``, ``REDIS_URL``) so an existing deployment's environment carries over.
Everything that can be checked without I/O is checked here; :func:`load` turns a validation
failure into one :class:`~clipembed.errors.ConfigurationError` line that the CLI prints
before exiting with code 2.
"""

from __future__ import annotations

import functools
import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from clipembed import errors, models
from clipembed.embedding import providers

# Re-exported for the modules that read them from here; the tables live in clipembed.models.
OPENAI_DEFAULT_MODEL = models.OPENAI_DEFAULT_MODEL
OPENAI_DEFAULT_DIMENSIONS = models.OPENAI_DEFAULT_DIMENSIONS
LOCAL_DEFAULT_MODEL = models.LOCAL_DEFAULT_MODEL
OPENAI_MAX_INPUTS_PER_REQUEST = models.OPENAI_MAX_INPUTS_PER_REQUEST
OPENAI_MAX_TOKENS_PER_REQUEST = models.OPENAI_MAX_TOKENS_PER_REQUEST
OPENAI_MAX_TOKENS_PER_INPUT = models.OPENAI_MAX_TOKENS_PER_INPUT

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Settings(BaseSettings):
    """Every knob clipembed has. Field names are the environment variable names, lower-cased."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        frozen=True,
        # `EMBEDDING_DIMENSIONS=` (as in .env.example) means unset, not "invalid integer".
        env_ignore_empty=True,
    )

    # --- embedding -------------------------------------------------------------------------
    embedding_enabled: bool = False
    #: a name in clipembed.embedding.providers.REGISTRY (openai, local)
    embedding_provider: str = "openai"
    openai_api_key: SecretStr | None = None
    embedding_model: str | None = Field(
        default=None,
        description="Default: text-embedding-3-small (openai), all-MiniLM-L6-v2 (local).",
    )
    embedding_dimensions: int | None = Field(default=None, ge=1, le=16_000)
    embedding_local_model_path: Path | None = Field(
        default=None,
        description="A sentence-transformers model directory for EMBEDDING_PROVIDER=local.",
    )
    embedding_multilingual: bool | None = Field(
        default=None,
        description="Whether the model is multilingual (default: known from its name).",
    )
    embedding_api_base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("embedding_api_base_url", "openai_base_url"),
    )
    embedding_requests_per_minute: int = Field(default=500, ge=1)
    embedding_tokens_per_minute: int = Field(default=1_000_000, ge=1)
    embedding_batch_size: int = Field(default=100, ge=1, le=OPENAI_MAX_INPUTS_PER_REQUEST)
    embedding_max_tokens_per_request: int = Field(
        default=OPENAI_MAX_TOKENS_PER_REQUEST, ge=1, le=OPENAI_MAX_TOKENS_PER_REQUEST
    )
    embedding_max_concurrency: int = Field(default=4, ge=1, le=256)
    embedding_max_attempts: int = Field(default=3, ge=1, le=20)
    embedding_timeout_seconds: float = Field(default=30.0, gt=0)
    embedding_cache_ttl_days: int = Field(default=30, ge=0)
    embedding_price_per_million_tokens: float | None = Field(default=None, ge=0)

    # --- search ----------------------------------------------------------------------------
    # the query lane (clipembed.embedding.query_lane): reserved budget, deadline, coalescing window
    embedding_query_reserve: float = Field(default=0.1, ge=0.0, lt=1.0)
    search_embed_timeout_ms: int = Field(default=1000, ge=10, le=60_000)
    search_coalesce_ms: float = Field(default=3.0, ge=0.0, le=100.0)
    search_statement_timeout_ms: int = Field(default=2000, ge=0)
    jobs_statement_timeout_ms: int = Field(default=300_000, ge=0)
    # a read replica for search (default: DATABASE_URL); jobs always write to DATABASE_URL
    search_database_url: SecretStr | None = None

    # --- the operations console (clipembed.admin) ---------------------------------------------
    clipembed_admin_session_hours: float = Field(default=12.0, gt=0, le=24 * 30)
    #: the session cookie's Secure flag; unset: set when the request came over https
    clipembed_admin_cookie_secure: bool | None = None
    #: when set, /search and /clips/{id}/similar need `Authorization: Bearer <this>`
    clipembed_search_token: SecretStr | None = None

    # --- the HTTP server's defences (docs/security.md) ----------------------------------------
    #: the largest request body any route takes (bytes); a larger one is 413 before it is parsed.
    #: At most 1 MiB: below Starlette's spooling threshold, so no body ever reaches the disk
    clipembed_max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=1024 * 1024)
    #: proxies whose X-Forwarded-For / X-Forwarded-Proto are believed: IPs or CIDRs,
    #: comma-separated. None by default: the peer's own address is the client
    clipembed_trusted_proxies: str = Field(default="", max_length=4000)
    #: failed sign-ins and wrong Bearer tokens per minute, per client address and in all
    clipembed_auth_failures_per_minute: int = Field(default=5, ge=1, le=10_000)
    clipembed_auth_failures_per_minute_global: int = Field(default=100, ge=1, le=1_000_000)
    #: per-client limits of /search and /clips/{id}/similar (0: none): requests per second
    #: (``burst`` at once), and queries per minute that need a new embedding (not cached)
    clipembed_search_requests_per_second: float = Field(default=10.0, ge=0)
    clipembed_search_burst: int = Field(default=20, ge=1, le=10_000)
    clipembed_search_embeds_per_minute: int = Field(default=30, ge=0)
    #: a request refused for its address's request budget is answered after up to this many
    #: seconds, not at once (clipembed.api.limits.refusal_hold); 0: at once
    clipembed_search_refusal_hold_max_s: float = Field(default=5.0, ge=0, le=60)

    # --- jobs ------------------------------------------------------------------------------
    # `backfill --batch/--concurrency` default to these; a flag wins (and lifts the service caps)
    clipembed_backfill_batch_size: int = Field(default=50, ge=1, le=OPENAI_MAX_INPUTS_PER_REQUEST)
    clipembed_backfill_concurrency: int = Field(default=4, ge=1, le=64)
    #: clips per second a backfill (sync, Batch API apply, model backfill) may write; 0: no cap.
    #: On a machine that also serves search, a cap keeps cores for it (docs/operations.md)
    clipembed_backfill_max_rate: float = Field(default=0.0, ge=0.0)
    #: bulk work halves its pace while a search statement runs longer than this (0: never
    #: slows for search); clipembed.bulk.adaptive_pace
    clipembed_backfill_search_target_ms: int = Field(default=200, ge=0, le=60_000)
    #: bulk work (backfill, Batch API apply, model backfill, a promote's mirror sync) runs its
    #: process and, where PostgreSQL runs on this machine, its sessions at this nice value:
    #: on idle cores at full speed, against search with ~1/10 of a core's share (the `nice`
    #: command's default; 0: no change; 19 yields nearly everything). The HNSW build after a
    #: load runs at 19 either way: one statement no pace can slow
    clipembed_bulk_nice: int = Field(default=10, ge=0, le=19)
    #: parallel workers of an HNSW index build (PostgreSQL's max_parallel_maintenance_workers):
    #: 0 on a machine that also serves search, more on a dedicated one
    clipembed_index_build_workers: int = Field(default=2, ge=0, le=64)
    #: memory an HNSW index build may take, at most (MB). A build uses what its graph needs
    #: (estimated from the rows and the storage), never less than the server's own
    #: maintenance_work_mem; a graph larger than this builds much slower (on disk), with a warning
    clipembed_index_build_memory_mb: int = Field(default=1024, ge=64, le=1_048_576)
    #: HNSW graph degree and build-time search width of a space's index, applied at its next
    #: build (a new space, a rebuild after a bulk load). ef_construction 200 raised recall@10 at
    #: a million clips from 0.81 to 0.91-0.94 and doubled the build (docs/benchmarks.md)
    clipembed_hnsw_m: int = Field(default=16, ge=2, le=100)
    clipembed_hnsw_ef_construction: int = Field(default=64, ge=4, le=1000)
    #: the kind of a space's index, applied at its next build: ``hnsw`` (a graph, kept current
    #: row by row from an empty table), ``ivfflat`` (lists trained on the rows at the build;
    #: for a large corpus loaded in bulk: at a million clips recall@10 0.97 against HNSW's 0.85
    #: for short text queries, built in a third of the time; docs/configuration.md) or ``auto``
    #: (IVFFlat for a build over 200,000 rows or more, HNSW below)
    clipembed_index_kind: Literal["hnsw", "ivfflat", "auto"] = "auto"
    #: IVFFlat lists; 0: from the rows at the build (rows / 1,000, sqrt(rows) past a million)
    clipembed_ivfflat_lists: int = Field(default=0, ge=0, le=32_768)
    embedding_scheduler_interval_minutes: float = Field(default=360, gt=0)
    embedding_scheduler_window_days: float = Field(default=7, gt=0)
    embedding_scheduler_limit: int = Field(default=100, ge=1)

    # --- the Batch API backfill (clipembed.batches) ------------------------------------------
    #: `backfill --via auto` uses the Batch API above this many clips to embed
    embedding_batch_api_min_clips: int = Field(default=10_000, ge=1)
    #: tokens our batches may hold at the provider at once (its enqueued-token limit)
    embedding_batch_queue_tokens: int = Field(default=3_000_000, ge=1)
    #: inputs per batch (the API allows 50,000)
    embedding_batch_api_max_inputs: int = Field(default=50_000, ge=1, le=50_000)
    embedding_batch_poll_seconds: float = Field(default=30.0, gt=0)

    # --- real-time queue and workers -------------------------------------------------------
    clipembed_queue_lease_seconds: float = Field(default=60, gt=0)
    clipembed_queue_max_attempts: int = Field(default=5, ge=1)
    clipembed_queue_poll_seconds: float = Field(default=2.0, gt=0)
    # after a NOTIFY, wait up to this long for a burst to accumulate before claiming; 0: off
    clipembed_queue_coalesce_ms: int = Field(default=20, ge=0, le=1000)
    clipembed_worker_batch_size: int = Field(default=100, ge=1, le=2048)
    clipembed_worker_concurrency: int = Field(default=2, ge=1, le=64)
    clipembed_serve_worker: bool = False

    # --- the clips table (clipembed.source) ---------------------------------------------------
    # A clips table that exists before clipembed's first migration is *adopted*: never altered;
    # these name its columns (Clipper's names by default). Read by `clipembed migrate up`,
    # which records them; every other command uses the recorded mapping.
    clipembed_source_table: str = Field(default="public.clips", min_length=1, max_length=127)
    clipembed_source_id: str = Field(default="id", min_length=1, max_length=63)
    clipembed_source_title: str = Field(default="title", min_length=1, max_length=63)
    clipembed_source_creator: str = Field(default="creator_name", min_length=1, max_length=63)
    clipembed_source_broadcaster: str = Field(
        default="broadcaster_name", min_length=1, max_length=63
    )
    clipembed_source_game: str = Field(default="game_name", min_length=1, max_length=63)
    clipembed_source_language: str = Field(default="language", min_length=1, max_length=63)
    clipembed_source_created_at: str = Field(default="created_at", min_length=1, max_length=63)
    #: boolean columns that hide a clip when any is true (NULL counts as false), comma-separated;
    #: "auto": those of is_removed, is_hidden, dmca_removed that the table has
    clipembed_hidden_when: str = Field(default="auto", max_length=1000)
    #: vectors another writer puts in clips.embedding: "replace" them with clipembed's, or "keep"
    clipembed_foreign_vectors: Literal["replace", "keep"] = "replace"

    # --- infrastructure --------------------------------------------------------------------
    database_url: SecretStr | None = None
    redis_url: SecretStr | None = Field(
        default=SecretStr("redis://127.0.0.1:6379/0"),
        description="redis://... ; 'embedded' starts a private redis-server; 'none' disables.",
    )
    redis_key_prefix: str = Field(
        default="clipembed:", validation_alias=AliasChoices("clipembed_redis_prefix")
    )
    clipembed_home: Path = Field(default_factory=lambda: Path.home() / ".clipembed")

    @field_validator("embedding_provider")
    @classmethod
    def _provider(cls, value: str) -> str:
        if value not in providers.REGISTRY:
            raise ValueError(f"unknown provider {value!r}: use {' or '.join(providers.names())}")
        return value

    @field_validator("clipembed_trusted_proxies")
    @classmethod
    def _proxies(cls, value: str) -> str:
        parse_networks(value)  # raises ValueError naming the entry
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        # The API key is not checked here: only commands that call the provider need it
        # (least privilege: whoever migrates the database need not hold it). See
        # :meth:`require_provider_credentials`, called where a provider is created.
        if self.clipembed_hnsw_ef_construction < 2 * self.clipembed_hnsw_m:
            raise ValueError(
                "CLIPEMBED_HNSW_EF_CONSTRUCTION must be at least twice CLIPEMBED_HNSW_M "
                f"(pgvector's rule): {self.clipembed_hnsw_ef_construction} < "
                f"2 x {self.clipembed_hnsw_m}"
            )
        known = self.capabilities.known(self.model)
        if known is not None:
            native = known.native_dimensions
            dims = self.dimensions
            if dims is not None:
                if not known.shortenable and dims != native:
                    raise ValueError(
                        f"EMBEDDING_DIMENSIONS={dims} is impossible for {self.model}, "
                        f"which always returns {native}"
                    )
                if dims > native:
                    raise ValueError(
                        f"EMBEDDING_DIMENSIONS={dims} is more than {self.model} can give ({native})"
                    )
        return self

    def require_provider_credentials(self) -> None:
        """Raise ConfigurationError when the configured provider cannot be called."""
        if self.capabilities.needs_api_key and (
            self.openai_api_key is None or not self.openai_api_key.get_secret_value().strip()
        ):
            keyless = [n for n in providers.names() if not providers.capabilities(n).needs_api_key]
            hint = f" (or set EMBEDDING_PROVIDER={keyless[0]} to use the bundled model)"
            raise errors.ConfigurationError(
                f"OPENAI_API_KEY is required when EMBEDDING_PROVIDER={self.embedding_provider}"
                + (hint if keyless else "")
            )

    # --- derived values ----------------------------------------------------------------------
    @property
    def reads_replica(self) -> bool:
        """Search reads ``SEARCH_DATABASE_URL`` (a replica), not the primary."""
        url = self.search_database_url
        return url is not None and bool(url.get_secret_value().strip())

    @property
    def capabilities(self) -> providers.Capabilities:
        """What the configured provider declares (clipembed.embedding.providers.REGISTRY)."""
        return providers.capabilities(self.embedding_provider)

    @property
    def model(self) -> str:
        """The model name in effect (the provider's default when unset)."""
        if self.capabilities.model_paths and self.embedding_local_model_path is not None:
            return str(self.embedding_local_model_path)
        if self.embedding_model:
            return self.embedding_model
        return self.capabilities.default_model

    @property
    def dimensions(self) -> int | None:
        """Dimensions in effect. ``None`` means: the model's own size (a local model's)."""
        if self.embedding_dimensions is not None:
            return self.embedding_dimensions
        return self.capabilities.default_dimensions

    @property
    def batch_price_per_million_tokens(self) -> float:
        """The Batch API's price: half the synchronous one."""
        return self.price_per_million_tokens * models.BATCH_PRICE_FACTOR

    @property
    def multilingual(self) -> bool:
        """Whether the model embeds many languages (decides CJK fusion, search.languages)."""
        if self.embedding_multilingual is not None:
            return self.embedding_multilingual
        return models.is_multilingual(self.model)

    @property
    def redis_enabled(self) -> bool:
        url = self.redis_url_value.strip().lower()
        return bool(url) and url not in ("none", "off", "false")

    @property
    def redis_url_value(self) -> str:
        """REDIS_URL as text (it may hold a password: never log it, see clipembed.redaction)."""
        return self.redis_url.get_secret_value() if self.redis_url is not None else ""

    @property
    def trusted_proxies(self) -> tuple[IPNetwork, ...]:
        """CLIPEMBED_TRUSTED_PROXIES as networks (a bare address is a /32 or /128)."""
        return parse_networks(self.clipembed_trusted_proxies)

    @property
    def cache_ttl_seconds(self) -> int:
        return self.embedding_cache_ttl_days * 24 * 3600

    @property
    def price_per_million_tokens(self) -> float:
        """US dollars per 1M tokens; 0 for a local model unless configured."""
        if self.embedding_price_per_million_tokens is not None:
            return self.embedding_price_per_million_tokens
        return self.capabilities.price_per_million(self.model)


def parse_networks(value: str) -> tuple[IPNetwork, ...]:
    """Comma-separated IPs and CIDRs; ValueError naming the first that is neither."""
    networks = []
    for entry in (e.strip() for e in value.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{entry[:60]!r} is not an IP address or CIDR") from None
    return tuple(networks)


def load(**overrides: object) -> Settings:
    """Read the settings, turning validation errors into one readable ConfigurationError."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise errors.ConfigurationError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem, naming the environment variable; never echoes a secret value."""
    parts = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = [str(x) for x in err.get("loc", ()) if x]
        msg = str(err.get("msg", "invalid"))
        msg = msg.removeprefix("Value error, ")
        if loc:
            parts.append(f"{loc[0].upper()}: {msg}")
        else:
            parts.append(msg)
    return "invalid configuration: " + "; ".join(parts)


@functools.cache
def _cached() -> Settings:
    return load()


def get() -> Settings:
    """Process-wide settings, read once (tests build their own with :func:`load`)."""
    return _cached()

"""The clips table clipembed embeds: its own (*owned*) or an existing platform's (*adopted*).

A fresh database has no clips table: ``clipembed migrate up`` creates one and owns it (the
demo, the tests, a new platform). A table that exists before clipembed's first migration —
Clipper's, built by its own migrations — is *adopted*: clipembed never alters, replaces or drops
anything it did not create there. Its state then lives in the schema ``clipembed``: a *shadow*
``clipembed.clips`` holding what search and the queue need (id, the embedded text, language,
creation time, visibility), kept by triggers named ``clipembed_*`` on the adopted table, and the
same tables as an owned installation around it. Search, the queue and every job read the shadow;
nothing of clipembed depends on the adopted table's columns in the catalog (trigger functions
name them only in their bodies), so the platform's own migrations stay free to change them.

This module is the pure part: the mapping from the settings (which column is the title, which
flags hide a clip) and the resolved description recorded at ``migrate up``. The SQL over the
adopted table lives in :mod:`clipembed.source.queries`; installing and removing it in
:mod:`clipembed.source.adoption`. Decisions: docs/notes/adoption.md.
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any, Literal

from clipembed import errors

if TYPE_CHECKING:
    from clipembed.settings import Settings

#: the schema an adopted installation keeps everything of its own in
SCHEMA = "clipembed"
#: the session search path of every clipembed connection: clipembed's schema first (adopted),
#: then public (owned installations, pgvector's types)
SEARCH_PATH = "clipembed, public"

#: mapped fields -> the shadow's (and the specification's) column names
FIELDS: dict[str, str] = {
    "id": "id",
    "title": "title",
    "creator": "creator_name",
    "broadcaster": "broadcaster_name",
    "game": "game_name",
    "language": "language",
    "created_at": "created_at",
}
#: the flags that hide a clip by default, where the table has them (Clipper: 000001, 000024, 000048)
AUTO_HIDDEN = ("is_removed", "is_hidden", "dmca_removed")
#: the specification's vector columns (Clipper's migration 000019)
VECTOR_COLUMNS = ("embedding", "embedding_generated_at", "embedding_model")
#: columns a search result shows besides the mapped ones, read from the table where it has them
DISPLAY = (
    "twitch_clip_id",
    "twitch_clip_url",
    "embed_url",
    "thumbnail_url",
    "duration",
    "view_count",
    "vote_score",
    "is_nsfw",
)

Mode = Literal["owned", "adopted"]


@dataclasses.dataclass(frozen=True, slots=True)
class Mapping:
    """Where the clips are and what their columns are called (Clipper's names by default)."""

    schema: str = "public"
    table: str = "clips"
    columns: tuple[tuple[str, str], ...] = tuple((f, c) for f, c in FIELDS.items())
    #: None: AUTO_HIDDEN, those the table has
    hidden_when: tuple[str, ...] | None = None
    foreign_vectors: Literal["replace", "keep"] = "replace"

    def column(self, field: str) -> str:
        return dict(self.columns)[field]

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"


def split_table(name: str) -> tuple[str, str]:
    """``schema.table`` or ``table`` (schema ``public``); names are taken as written."""
    name = name.strip()
    schema, dot, table = name.partition(".")
    if not dot:
        schema, table = "public", schema
    if not schema or not table or "." in table:
        raise errors.ConfigurationError(
            f"CLIPEMBED_SOURCE_TABLE={name!r} is not a table name (schema.table or table)"
        )
    if schema == SCHEMA:
        raise errors.ConfigurationError(
            f"CLIPEMBED_SOURCE_TABLE={name!r}: the schema {SCHEMA!r} is clipembed's own"
        )
    return schema, table


def parse_hidden(value: str) -> tuple[str, ...] | None:
    """``auto`` -> None; ``none`` or empty -> no flag; else the comma-separated columns."""
    value = value.strip()
    if value.lower() == "auto":
        return None
    if value.lower() in ("", "none"):
        return ()
    names = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    return names


def mapping_from_settings(cfg: Settings) -> Mapping:
    schema, table = split_table(cfg.clipembed_source_table)
    columns = (
        ("id", cfg.clipembed_source_id),
        ("title", cfg.clipembed_source_title),
        ("creator", cfg.clipembed_source_creator),
        ("broadcaster", cfg.clipembed_source_broadcaster),
        ("game", cfg.clipembed_source_game),
        ("language", cfg.clipembed_source_language),
        ("created_at", cfg.clipembed_source_created_at),
    )
    return Mapping(
        schema=schema,
        table=table,
        columns=tuple((f, c.strip()) for f, c in columns),
        hidden_when=parse_hidden(cfg.clipembed_hidden_when),
        foreign_vectors=cfg.clipembed_foreign_vectors,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Source:
    """An adopted table as ``migrate up`` found it: the mapping resolved against its catalog."""

    mapping: Mapping
    #: the boolean columns that hide a clip (any true; NULL counts as false)
    hidden: tuple[str, ...]
    #: the table's own twitch_clip_id column, if it has one (else the id is used)
    twitch_clip_id: str | None
    #: the display columns the table has
    display: tuple[str, ...]
    #: the type of its embedding_generated_at (``timestamp without time zone`` in Clipper)
    generated_at_type: str | None

    @property
    def has_vector_columns(self) -> bool:
        return self.generated_at_type is not None

    def to_json(self) -> str:
        m = self.mapping
        return json.dumps(
            {
                "schema": m.schema,
                "table": m.table,
                "columns": dict(m.columns),
                "hidden_when": None if m.hidden_when is None else list(m.hidden_when),
                "foreign_vectors": m.foreign_vectors,
                "hidden": list(self.hidden),
                "twitch_clip_id": self.twitch_clip_id,
                "display": list(self.display),
                "generated_at_type": self.generated_at_type,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Source:
        hidden_when = data.get("hidden_when")
        mapping = Mapping(
            schema=data["schema"],
            table=data["table"],
            columns=tuple((f, data["columns"][f]) for f in FIELDS),
            hidden_when=None if hidden_when is None else tuple(hidden_when),
            foreign_vectors=data.get("foreign_vectors", "replace"),
        )
        return cls(
            mapping=mapping,
            hidden=tuple(data["hidden"]),
            twitch_clip_id=data.get("twitch_clip_id"),
            display=tuple(data.get("display", ())),
            generated_at_type=data.get("generated_at_type"),
        )


def resolve(mapping: Mapping, table_columns: dict[str, str]) -> Source:
    """Check ``mapping`` against the table's columns (name -> type); one clear error otherwise.

    Raises SchemaError naming the first missing or mistyped column and the setting behind it.
    """
    settings_name = {
        "id": "CLIPEMBED_SOURCE_ID",
        "title": "CLIPEMBED_SOURCE_TITLE",
        "creator": "CLIPEMBED_SOURCE_CREATOR",
        "broadcaster": "CLIPEMBED_SOURCE_BROADCASTER",
        "game": "CLIPEMBED_SOURCE_GAME",
        "language": "CLIPEMBED_SOURCE_LANGUAGE",
        "created_at": "CLIPEMBED_SOURCE_CREATED_AT",
    }
    where = mapping.qualified
    for field, column in mapping.columns:
        if column not in table_columns:
            raise errors.SchemaError(
                f"{where} has no column {column!r} (the clip's {field}: set "
                f"{settings_name[field]} to the column that holds it)"
            )
    id_type = table_columns[mapping.column("id")]
    if id_type != "uuid":
        raise errors.SchemaError(
            f"{where}.{mapping.column('id')} is {id_type}: clipembed adopts tables keyed by uuid"
        )
    created_type = table_columns[mapping.column("created_at")]
    if not created_type.startswith("timestamp"):
        raise errors.SchemaError(
            f"{where}.{mapping.column('created_at')} is {created_type}, not a timestamp "
            "(CLIPEMBED_SOURCE_CREATED_AT)"
        )
    if mapping.hidden_when is None:
        hidden = tuple(c for c in AUTO_HIDDEN if table_columns.get(c) == "boolean")
    else:
        for column in mapping.hidden_when:
            if column not in table_columns:
                raise errors.SchemaError(
                    f"{where} has no column {column!r} (CLIPEMBED_HIDDEN_WHEN names it)"
                )
            if table_columns[column] != "boolean":
                raise errors.SchemaError(
                    f"{where}.{column} is {table_columns[column]}, not boolean "
                    "(CLIPEMBED_HIDDEN_WHEN takes boolean columns)"
                )
        hidden = mapping.hidden_when
    has_vectors = all(c in table_columns for c in VECTOR_COLUMNS)
    return Source(
        mapping=mapping,
        hidden=hidden,
        twitch_clip_id="twitch_clip_id" if "twitch_clip_id" in table_columns else None,
        display=tuple(c for c in DISPLAY if c in table_columns),
        generated_at_type=table_columns["embedding_generated_at"] if has_vectors else None,
    )


def missing_vector_columns(table_columns: dict[str, str]) -> tuple[str, ...]:
    """The specification's vector columns the table lacks (clipembed adds those, and only those)."""
    return tuple(c for c in VECTOR_COLUMNS if c not in table_columns)

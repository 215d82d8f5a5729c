"""A space's table (``embeddings_space_<id>``): every statement over it, in one place.

Writes (the backfill's staged upsert, the worker's upsert, the Batch API's checks), the
index (HNSW or IVFFlat: build settings, create, drop), and the reads that are about the table itself (coverage,
models, stale pages, sizes, a clip's vector). Both upserts are built by :func:`_upsert`: a
vector is written only with its model and the content hash it was made from. Search's ranking
statements, which read the table beside ``clips`` and the postings, are
:mod:`clipembed.search.queries`. A space's table and index names come from
``embedding_spaces.table_name`` (written by us) and are composed as identifiers only.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

from psycopg import sql


def backfill_page(table: str) -> sql.Composed:
    """One keyset page of live clips with their vector's hash in a space (``%s``: last id, limit).

    A clip waiting in an open Batch API batch of the same space belongs to that batch: no other
    path embeds it (it would be paid twice); the partial index on waiting items makes the check
    one probe.
    """
    return sql.SQL(
        """
SELECT c.id, c.title, c.broadcaster_name, c.creator_name, c.game_name,
       e.content_hash AS embedding_content_hash, e.clip_id IS NULL AS missing
FROM clips c LEFT JOIN {table} e ON e.clip_id = c.id
WHERE NOT c.is_removed AND c.id > %s
  AND NOT EXISTS (
      SELECT 1 FROM embedding_batch_items i JOIN embedding_batches b ON b.id = i.batch_id
      WHERE i.clip_id = c.id AND i.state = 'waiting' AND b.space_id = %s
  )
ORDER BY c.id
LIMIT %s
"""
    ).format(table=sql.Identifier(table))


def backfill_count(table: str) -> sql.Composed:
    """Live clips and those without a vector in the space: the progress bar and the index decision."""
    return sql.SQL(
        "SELECT count(*) AS live, count(*) FILTER (WHERE e.clip_id IS NULL) AS missing"
        " FROM clips c LEFT JOIN {table} e ON e.clip_id = c.id WHERE NOT c.is_removed"
    ).format(table=sql.Identifier(table))


def create_stage(dimensions: int) -> sql.Composed:
    """A transaction-scoped staging table for one batch's vectors (COPY target)."""
    return sql.SQL(
        "CREATE TEMP TABLE backfill_stage ("
        " id uuid, embedding vector({dims}), content_hash bytea, model text,"
        " title text, broadcaster_name text, creator_name text, game_name text"
        ") ON COMMIT DROP"
    ).format(dims=sql.Literal(int(dimensions)))


COPY_STAGE = (
    "COPY backfill_stage (id, embedding, content_hash, model, title, broadcaster_name, "
    "creator_name, game_name) FROM STDIN WITH (FORMAT BINARY)"
)

#: Binary COPY needs the column types spelled out, in COPY_STAGE's order.
COPY_STAGE_TYPES = ["uuid", "vector", "bytea", "text", "text", "text", "text", "text"]


def _upsert(table: str, storage: str, dimensions: int, rows: str, when: str = "") -> sql.Composed:
    """``INSERT ... SELECT`` of staged vectors into a space, replacing a clip's vector with its
    model, content hash and time; the one upsert of a space's rows. The filter keys (lower-case
    game and broadcaster, migration 0014) are read from ``clips`` in the same statement: both
    names are in the embedded text, so keys and vector always come from the same row version
    (the backfill checks the staged text against ``clips`` in this statement; the worker's
    lease stands for the same). ``rows``: the ``FROM``/
    ``WHERE`` of the staged rows (``s``: id, embedding, model, content_hash); ``when``: a
    condition on the replaced row (``e``), empty to always replace."""
    return sql.SQL(
        "INSERT INTO {table} AS e"
        " (clip_id, embedding, model, content_hash, generated_at, game_key, broadcaster_key)"
        " SELECT s.id, s.embedding::{storage}({dims}), s.model, s.content_hash, now(),"
        " (SELECT lower(k.game_name) FROM clips k WHERE k.id = s.id),"
        " (SELECT lower(k.broadcaster_name) FROM clips k WHERE k.id = s.id) {rows}"
        " ON CONFLICT (clip_id) DO UPDATE"
        " SET embedding = EXCLUDED.embedding, model = EXCLUDED.model,"
        " content_hash = EXCLUDED.content_hash, generated_at = EXCLUDED.generated_at,"
        " game_key = EXCLUDED.game_key, broadcaster_key = EXCLUDED.broadcaster_key {when}"
        " RETURNING e.clip_id"
    ).format(
        table=sql.Identifier(table),
        storage=sql.SQL("halfvec" if storage == "halfvec" else "vector"),
        dims=sql.Literal(int(dimensions)),
        rows=sql.SQL(rows),
        when=sql.SQL(f"WHERE {when}" if when else ""),
    )


def apply_stage(table: str, storage: str, dimensions: int) -> sql.Composed:
    """Upsert the staged vectors into a space, only where the clip's text is still what was
    embedded (a clip edited meanwhile keeps its queued re-embedding rather than a stale vector)
    and, unless forced, only where the stored hash differs. Returns the number of clips written.

    ``%(retire)s``: the real-time queue's item for this text is done too (only when this is the
    one space there is: with several, a worker brings the others up to date and retires it).
    """
    written = _upsert(
        table,
        storage,
        dimensions,
        """FROM backfill_stage s JOIN clips c ON c.id = s.id
    WHERE NOT c.is_removed
      AND c.title = s.title
      AND c.broadcaster_name = s.broadcaster_name
      AND c.creator_name IS NOT DISTINCT FROM s.creator_name
      AND c.game_name IS NOT DISTINCT FROM s.game_name""",
        "%(force)s OR e.content_hash IS DISTINCT FROM EXCLUDED.content_hash",
    )
    return sql.SQL(
        """
WITH written AS ({written}), retired AS (
    DELETE FROM embedding_queue q USING written u
    WHERE %(retire)s AND q.clip_id = u.clip_id RETURNING 1
)
SELECT count(*) FROM written
"""
    ).format(written=written)


#: Memory for one-pass HNSW builds: the graph of 100,000 x 768-dim vectors needs ~350 MB.
def index_build_settings(workers: int, memory_mb: int) -> tuple[sql.Composed, ...]:
    """The session settings of an HNSW build: ``memory_mb`` of memory, ``workers`` parallel
    workers (clipembed.bulk.index_policy decides both)."""
    return (
        sql.SQL("SET maintenance_work_mem = {}").format(sql.Literal(f"{int(memory_mb)}MB")),
        sql.SQL("SET max_parallel_maintenance_workers = {}").format(sql.Literal(int(workers))),
    )


#: What the server itself gives maintenance (bytes): a build never takes less.
MAINTENANCE_MEMORY = "SELECT pg_size_bytes(current_setting('maintenance_work_mem'))"


def recent_without_embedding(table: str) -> sql.Composed:
    """The original's query, per space: recent live clips without a vector, newest first
    (``%s`` = seconds, limit)."""
    return sql.SQL(
        """
SELECT c.id, c.title, c.broadcaster_name, c.creator_name, c.game_name
FROM clips c
WHERE NOT c.is_removed
  AND c.created_at > now() - make_interval(secs => %s)
  AND NOT EXISTS (SELECT 1 FROM {table} e WHERE e.clip_id = c.id)
ORDER BY c.created_at DESC
LIMIT %s
"""
    ).format(table=sql.Identifier(table))


def by_model(table: str) -> sql.Composed:
    return sql.SQL(
        "SELECT coalesce(nullif(e.model, ''), '(none)') AS model, count(*) AS clips"
        " FROM {table} e JOIN clips c ON c.id = e.clip_id WHERE NOT c.is_removed"
        " GROUP BY 1 ORDER BY 2 DESC, 1"
    ).format(table=sql.Identifier(table))


def embedded_page(table: str) -> sql.Composed:
    """One keyset page of embedded clips for the stale count (``%s`` = last id, limit)."""
    return sql.SQL(
        """
SELECT c.id, c.title, c.broadcaster_name, c.creator_name, c.game_name,
       e.content_hash AS embedding_content_hash
FROM clips c JOIN {table} e ON e.clip_id = c.id
WHERE NOT c.is_removed AND c.id > %s
ORDER BY c.id LIMIT %s
"""
    ).format(table=sql.Identifier(table))


INDEX_EXISTS = "SELECT to_regclass(%s) IS NOT NULL"


IndexKind = Literal["hnsw", "ivfflat", "auto"]
INDEX_KINDS: tuple[str, ...] = ("hnsw", "ivfflat", "auto")
#: ``auto`` builds IVFFlat from this many rows at the build, HNSW below. Placed between measured
#: points (two- and three-word queries, recall@10 at ef_search 200 / 10 probes): HNSW 0.9825 at
#: 100,000 clips, 0.7775 at 500,000 (IVFFlat 0.975) and 0.825 at a million (IVFFlat 0.9775);
#: docs/notes/index-kinds.md.
AUTO_IVFFLAT_MIN_ROWS = 200_000


@dataclasses.dataclass(frozen=True)
class IndexBuild:
    """A space's index and its build parameters (CLIPEMBED_INDEX_KIND, CLIPEMBED_HNSW_M,
    CLIPEMBED_HNSW_EF_CONSTRUCTION, CLIPEMBED_IVFFLAT_LISTS). pgvector keeps them in the index:
    inserts use them too.

    ``hnsw`` (the default) is a graph: built on an empty table and kept current row by row.
    ``ivfflat`` ranks ``lists`` centroids, trained on the rows there at its build, and scans the
    nearest lists exactly: at a million template-made clips, two- and three-word queries reached
    recall@10 0.97 through it against 0.85 through the graph, and it built in a third of the
    time (docs/benchmarks.md); a table that has grown far past its build wants a rebuild
    (:func:`ivfflat_stale`)."""

    kind: IndexKind = "hnsw"
    m: int = 16
    ef_construction: int = 64
    lists: int = 0  # ivfflat; 0: from the rows at the build (:func:`ivfflat_lists`)

    def for_rows(self, rows: int) -> IndexBuild:
        """``auto`` made concrete for the ``rows`` at the build: IVFFlat for a large table (a
        corpus loaded in bulk), HNSW otherwise (a space built empty and grown row by row);
        any other kind as it is (pure)."""
        if self.kind != "auto":
            return self
        return dataclasses.replace(
            self, kind="ivfflat" if rows >= AUTO_IVFFLAT_MIN_ROWS else "hnsw"
        )

    def trains_on(self, rows: int) -> bool:
        """Will an index built over ``rows`` be IVFFlat (trained on the rows there: a load
        builds it after loading)?"""
        return self.for_rows(rows).kind == "ivfflat"


DEFAULT_BUILD = IndexBuild()
#: Rows an inverted list holds at most before the table is too large for its build's lists
#: (pgvector's advice: rows / 1,000 lists up to a million rows, sqrt(rows) beyond).
ROWS_PER_LIST = 1000
#: An IVFFlat index whose table holds this many times the rows its lists were chosen for scans
#: that many times the rows a query (and its lists no longer fit the data they were trained on).
IVFFLAT_STALE_GROWTH = 4


def ivfflat_lists(rows: int) -> int:
    """pgvector's advice for ``lists``: rows / 1,000 up to a million rows, sqrt(rows) beyond;
    at least 1 (one list: every query scans the whole table, exactly)."""
    if rows <= 1_000_000:
        return max(1, rows // ROWS_PER_LIST)
    return math.isqrt(rows)


def ivfflat_rows(lists: int) -> int:
    """The rows ``lists`` lists suit (the inverse of :func:`ivfflat_lists`)."""
    lists = max(lists, 1)
    return lists * ROWS_PER_LIST if lists <= 1000 else lists * lists


def ivfflat_stale(lists: int, rows: int) -> bool:
    """Has the table outgrown an IVFFlat index with ``lists`` lists: does it hold
    :data:`IVFFLAT_STALE_GROWTH` times the rows they suit (pure)?"""
    return rows >= IVFFLAT_STALE_GROWTH * ivfflat_rows(lists)


def create_index(
    table: str, index: str, storage: str, build: IndexBuild = DEFAULT_BUILD, rows: int = 0
) -> sql.Composed:
    """The space's index, cosine distance: HNSW with ``build``'s m and ef_construction, or
    IVFFlat with its lists (``build.lists``, or from the ``rows`` there now); ``auto`` by the
    ``rows`` (:meth:`IndexBuild.for_rows`)."""
    build = build.for_rows(rows)
    ops = "halfvec_cosine_ops" if storage == "halfvec" else "vector_cosine_ops"
    if build.kind == "ivfflat":
        options = sql.SQL("lists = {}").format(sql.Literal(int(build.lists or ivfflat_lists(rows))))
    else:
        options = sql.SQL("m = {}, ef_construction = {}").format(
            sql.Literal(int(build.m)), sql.Literal(int(build.ef_construction))
        )
    return sql.SQL(
        "CREATE INDEX IF NOT EXISTS {index} ON {table} USING {method} (embedding {ops}) WITH ({options})"
    ).format(
        index=sql.Identifier(index),
        table=sql.Identifier(table),
        method=sql.SQL("ivfflat" if build.kind == "ivfflat" else "hnsw"),
        ops=sql.SQL(ops),
        options=options,
    )


def index_option(reloptions: list[str] | None, name: str, default: int) -> int:
    """An integer option of an index from ``pg_class.reloptions`` (['lists=1000']), pure;
    ``default``: pgvector's, for an option the build left unset."""
    for option in reloptions or []:
        key, _, value = option.partition("=")
        if key == name and value.isdigit():
            return int(value)
    return default


#: pgvector's lists for an IVFFlat index built without the option
IVFFLAT_DEFAULT_LISTS = 100
#: The kind of a space's index and its options (``%s``: its name): ('hnsw', ['m=16', ...]).
INDEX_KIND = (
    "SELECT am.amname, c.reloptions FROM pg_class c JOIN pg_am am ON am.oid = c.relam"
    " WHERE c.oid = to_regclass(%s)"
)


def count_rows(table: str) -> sql.Composed:
    """The rows of a space's table (an index build sizes its memory by them)."""
    return sql.SQL("SELECT count(*) FROM {table}").format(table=sql.Identifier(table))


def drop_index(index: str) -> sql.Composed:
    return sql.SQL("DROP INDEX IF EXISTS {index}").format(index=sql.Identifier(index))


def drop_table(table: str) -> sql.Composed:
    return sql.SQL("DROP TABLE IF EXISTS {table}").format(table=sql.Identifier(table))


def coverage(table: str) -> sql.Composed:
    """Over live clips: how many, how many have a vector in the space, how many of those were
    made in the last 24 hours (the original's monitoring numbers), and the newest one's time."""
    return sql.SQL(
        "SELECT count(*) AS live, count(e.clip_id) AS embedded,"
        " count(*) FILTER (WHERE e.generated_at > now() - interval '24 hours')"
        " AS embedded_last_24h, max(e.generated_at) AS last_generated"
        " FROM clips c LEFT JOIN {table} e ON e.clip_id = c.id WHERE NOT c.is_removed"
    ).format(table=sql.Identifier(table))


def behind(candidate: str, active: str) -> sql.Composed:
    """Live clips the active space has a vector for and the candidate has not, with nothing on
    the queue to bring it (a clip inserted a moment ago is on the queue: the worker writes it
    into both spaces). Promote refuses while this is not 0."""
    return sql.SQL(
        "SELECT count(*) FROM clips c JOIN {active} a ON a.clip_id = c.id"
        " WHERE NOT c.is_removed"
        " AND NOT EXISTS (SELECT 1 FROM {candidate} e WHERE e.clip_id = c.id)"
        " AND NOT EXISTS (SELECT 1 FROM embedding_queue q WHERE q.clip_id = c.id)"
    ).format(candidate=sql.Identifier(candidate), active=sql.Identifier(active))


#: Table and index sizes in bytes (``%s`` = table name, index name).
SIZES = """
SELECT coalesce(pg_total_relation_size(to_regclass(%s)), 0)
         - coalesce(pg_indexes_size(to_regclass(%s)), 0) AS table_bytes,
       coalesce(pg_relation_size(to_regclass(%s)), 0) AS index_bytes
"""


def hashes(table: str) -> sql.Composed:
    """The stored content hash of each of these clips in a space (``%s`` = uuid[])."""
    return sql.SQL("SELECT clip_id, content_hash FROM {table} WHERE clip_id = ANY(%s)").format(
        table=sql.Identifier(table)
    )


def vector_of(table: str) -> sql.Composed:
    """A live clip's vector in a space, as ``vector`` (similar clips)."""
    return sql.SQL(
        "SELECT e.embedding::vector FROM {table} e JOIN clips c ON c.id = e.clip_id"
        " WHERE e.clip_id = %s AND NOT c.is_removed"
    ).format(table=sql.Identifier(table))


def embedded_with(table: str) -> sql.Composed:
    """Of these (clip, content hash) pairs, the clips whose vector in the space is exactly that."""
    return sql.SQL(
        "SELECT e.clip_id FROM unnest(%s::uuid[], %s::bytea[]) AS t(id, h)"
        " JOIN {table} e ON e.clip_id = t.id AND e.content_hash = t.h"
    ).format(table=sql.Identifier(table))


def write_space(table: str, storage: str, dimensions: int) -> sql.Composed:
    """Upsert the staged vectors of one space (``%(space)s``) whose queue items are still the
    worker's (``%(worker)s``): the real-time path's write."""
    return _upsert(
        table,
        storage,
        dimensions,
        """FROM queue_stage s
WHERE s.space_id = %(space)s
  AND EXISTS (
      SELECT 1 FROM embedding_queue q
      WHERE q.clip_id = s.id AND q.generation = s.generation AND q.leased_by = %(worker)s
  )""",
    )

"""The quality harness: rank a BEIR benchmark with the product's own search code.

``clipembed eval beir DIR`` loads a BEIR-format directory (``corpus.jsonl[.gz]``,
``queries.jsonl``, ``qrels/test.tsv``) into tables of its own (``beir_<name>_docs`` with the
same postings machinery as ``clips``), embeds the documents (``title + " " + text``) through the
configured embedding service — cached in Redis, so a second run costs no model time — and
reports nDCG@10 and recall@100 for each search mode — next to a reference BM25 (the bm25s
library, Lucene's formula, English stop words and Snowball stemmer) computed in the same run on
the same files, so the SQL keyword branch is always judged against an independent implementation.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import json
import re
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from clipembed import errors
from clipembed.embedding import service as service_mod
from clipembed.eval.metrics import EVAL_DEPTH, judged, ndcg_at, recall_at
from clipembed.eval.reference import reference_bm25
from clipembed.search import core, ranking

__all__ = ["reference_bm25"]  # re-exported: the report puts both side by side

EMBED_CHUNK = 256  # documents per embedding call
TITLE_WEIGHT = 2.0  # a title term counts twice a body term (BM25F-style)


@dataclasses.dataclass
class Dataset:
    name: str
    corpus: dict[str, tuple[str, str]]  # id -> (title, text)
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def _lines(path: Path) -> Iterable[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        yield from fh


class DatasetError(errors.ClipembedError, ValueError):
    """A BEIR directory that is missing a file or holds a malformed line (usage error: exit 2)."""


def _find(directory: Path, stem: str) -> Path:
    for candidate in (directory / f"{stem}.jsonl", directory / f"{stem}.jsonl.gz"):
        if candidate.exists():
            return candidate
    raise DatasetError(f"{directory} has no {stem}.jsonl[.gz] (not a BEIR directory?)")


def _records(path: Path) -> Iterable[dict[str, Any]]:
    for number, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            record["_id"]
        except (ValueError, KeyError, TypeError) as exc:
            raise DatasetError(f"{path}:{number}: not a BEIR record ({exc})") from None
        yield record


def load(directory: Path, *, split: str = "test") -> Dataset:
    """Read a BEIR directory; queries without judgements in ``qrels/<split>.tsv`` are dropped."""
    corpus = {
        str(doc["_id"]): (str(doc.get("title") or ""), str(doc.get("text") or ""))
        for doc in _records(_find(directory, "corpus"))
    }
    queries = {
        str(q["_id"]): str(q.get("text") or "") for q in _records(_find(directory, "queries"))
    }
    qrels_path = directory / "qrels" / f"{split}.tsv"
    if not qrels_path.exists():
        raise DatasetError(f"{directory} has no qrels/{split}.tsv")
    qrels: dict[str, dict[str, int]] = {}
    with open(qrels_path, encoding="utf-8") as fh:
        for number, row in enumerate(csv.reader(fh, delimiter="\t"), start=1):
            if not row or row[0] == "query-id":
                continue
            try:
                qrels.setdefault(row[0], {})[row[1]] = int(float(row[2]))
            except (IndexError, ValueError):
                raise DatasetError(
                    f"{qrels_path}:{number}: expected query-id, corpus-id, score"
                ) from None
    queries = {q: t for q, t in queries.items() if q in qrels}
    name = re.sub(r"[^a-z0-9_]", "_", directory.resolve().name.lower())[:40] or "corpus"
    return Dataset(name, corpus, queries, qrels)


# --- tables ---------------------------------------------------------------------------------


#: Every table the harness makes lives in this schema: an evaluation run on a production
#: database never touches the product's own tables.
SCHEMA_NAME = "clipembed_eval"


def corpus_for(name: str) -> core.Corpus:
    return core.Corpus(
        schema=SCHEMA_NAME,
        table=f"beir_{name}_docs",
        postings=f"beir_{name}_postings",
        doclen=f"beir_{name}_doclen",
        field_weights=(TITLE_WEIGHT, 1.0, 1.0, 1.0),
    )


SCHEMA = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {docs} (
    id text PRIMARY KEY,
    title text NOT NULL,
    body text NOT NULL,
    search_vector tsvector GENERATED ALWAYS AS (
        setweight(clipembed_tsvector('english', title), 'A')
        || setweight(clipembed_tsvector('english', body), 'D')
    ) STORED,
    embedding vector({dims}),
    embedding_key text
);
CREATE TABLE IF NOT EXISTS {postings} (
    lexeme text NOT NULL, doc_id text NOT NULL REFERENCES {docs} (id) ON DELETE CASCADE,
    tf_a smallint NOT NULL, tf_b smallint NOT NULL, tf_c smallint NOT NULL, tf_d smallint NOT NULL,
    len_a integer NOT NULL, len_b integer NOT NULL, len_c integer NOT NULL, len_d integer NOT NULL,
    PRIMARY KEY (lexeme, doc_id) INCLUDE (tf_a, tf_b, tf_c, tf_d, len_a, len_b, len_c, len_d)
);
CREATE TABLE IF NOT EXISTS {doclen} (
    doc_id text PRIMARY KEY REFERENCES {docs} (id) ON DELETE CASCADE,
    len_a integer NOT NULL, len_b integer NOT NULL, len_c integer NOT NULL, len_d integer NOT NULL
);
"""


BULK_POSTINGS = """
INSERT INTO {doclen} (doc_id, len_a, len_b, len_c, len_d)
SELECT d.id,
       count(u.lexeme) FILTER (WHERE w = 'A'), count(u.lexeme) FILTER (WHERE w = 'B'),
       count(u.lexeme) FILTER (WHERE w = 'C'), count(u.lexeme) FILTER (WHERE w = 'D')
FROM {docs} d
LEFT JOIN LATERAL unnest(d.search_vector) AS u ON true
LEFT JOIN LATERAL unnest(coalesce(u.weights, ARRAY['D']::text[])) AS w ON true
GROUP BY d.id;
INSERT INTO {postings} (lexeme, doc_id, tf_a, tf_b, tf_c, tf_d, len_a, len_b, len_c, len_d)
SELECT t.lexeme, t.id, least(t.a, 32767), least(t.b, 32767), least(t.c, 32767),
       least(t.d, 32767), l.len_a, l.len_b, l.len_c, l.len_d
FROM (
    SELECT d.id, u.lexeme,
           count(*) FILTER (WHERE w = 'A') AS a, count(*) FILTER (WHERE w = 'B') AS b,
           count(*) FILTER (WHERE w = 'C') AS c, count(*) FILTER (WHERE w = 'D') AS d
    FROM {docs} d, unnest(d.search_vector) AS u, unnest(coalesce(u.weights, ARRAY['D']::text[])) AS w
    GROUP BY d.id, u.lexeme
) t JOIN {doclen} l ON l.doc_id = t.id
"""


def bulk_postings(corpus: core.Corpus) -> sql.Composed:
    """The postings and lengths the trigger would have written, for a whole table at once.

    Same rows as ``clipembed_postings_update`` (0003_search.up.sql) gives row by row,
    including a zero-length row for a document without lexemes.
    """
    return sql.SQL(BULK_POSTINGS).format(
        docs=corpus.ident(corpus.table),
        postings=corpus.ident(corpus.postings),
        doclen=corpus.ident(corpus.doclen),
    )


async def prepare(
    pool: AsyncConnectionPool,
    data: Dataset,
    service: service_mod.EmbeddingService | None,
    *,
    dimensions: int | None = None,
) -> dict[str, Any]:
    """Create and fill the corpus tables; embed what is missing. Returns timings.

    Without a service (a keyword-only evaluation) the documents are loaded but not embedded,
    and no model is loaded at all; ``dimensions`` then sizes a new table's vector column.
    """
    corpus = corpus_for(data.name)
    timings: dict[str, Any] = {}
    dims = service.dimensions if service is not None else dimensions
    if dims is None:
        raise ValueError("prepare() needs an embedding service or the dimensions")
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = to_regclass(%s) AND attname = 'embedding'",
            (f"{corpus.schema}.{corpus.table}",),
        )
        row = await cur.fetchone()
        if row and service is not None and row[0] != f"vector({dims})":
            await conn.execute(sql.SQL("DROP TABLE {} CASCADE").format(corpus.ident(corpus.table)))
        await conn.execute(
            sql.SQL(SCHEMA).format(
                schema=sql.Identifier(SCHEMA_NAME),
                docs=corpus.ident(corpus.table),
                postings=corpus.ident(corpus.postings),
                doclen=corpus.ident(corpus.doclen),
                dims=sql.Literal(dims),
            )
        )
        cur = await conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(corpus.ident(corpus.table))
        )
        have = (await cur.fetchone() or (0,))[0]
        await conn.commit()
        t = time.monotonic()
        if have != len(data.corpus):
            await conn.execute(sql.SQL("TRUNCATE {} CASCADE").format(corpus.ident(corpus.table)))
            # No row trigger: a row-by-row postings update costs ~16 ms per long document (84 s
            # for SciFact on a busy box); the postings are built in two set-based statements.
            async with (
                conn.cursor() as c,
                c.copy(
                    sql.SQL("COPY {} (id, title, body) FROM STDIN").format(
                        corpus.ident(corpus.table)
                    )
                ) as copy,
            ):
                for doc_id, (title, text) in data.corpus.items():
                    await copy.write_row(
                        (doc_id, title.replace("\x00", ""), text.replace("\x00", ""))
                    )
            await conn.execute(bulk_postings(corpus))
            await conn.commit()
        timings["load_seconds"] = round(time.monotonic() - t, 2)
        if service is None:
            timings["embedded_documents"] = 0
            timings["embed_seconds"] = 0.0
            await conn.execute(sql.SQL("ANALYZE {}").format(corpus.ident(corpus.postings)))
            await conn.commit()
            core.clear_stats_cache()
            return timings
        key = f"{service.model}:{service.dimensions}"
        cur = await conn.execute(
            sql.SQL("SELECT id FROM {} WHERE embedding_key IS DISTINCT FROM %s ORDER BY id").format(
                corpus.ident(corpus.table)
            ),
            (key,),
        )
        todo = [r[0] for r in await cur.fetchall()]
        await conn.commit()
    t = time.monotonic()
    for start in range(0, len(todo), EMBED_CHUNK):
        ids = todo[start : start + EMBED_CHUNK]
        texts = [f"{data.corpus[i][0]} {data.corpus[i][1]}".strip() or i for i in ids]
        vectors = (await service.embed(texts)).vectors
        async with pool.connection() as conn, conn.cursor() as c:
            await c.executemany(
                sql.SQL("UPDATE {} SET embedding = %s, embedding_key = %s WHERE id = %s").format(
                    corpus.ident(corpus.table)
                ),
                [(v, key, i) for v, i in zip(vectors, ids, strict=True)],
            )
    timings["embedded_documents"] = len(todo)
    timings["embed_seconds"] = round(time.monotonic() - t, 2)
    async with pool.connection() as conn:
        await conn.set_autocommit(True)
        await conn.execute(
            sql.SQL(
                "CREATE INDEX IF NOT EXISTS {} ON {} USING hnsw (embedding vector_cosine_ops) "
                "WITH (m = 16, ef_construction = 64)"
            ).format(sql.Identifier(f"{corpus.table}_hnsw"), corpus.ident(corpus.table))
        )
        await conn.execute(sql.SQL("ANALYZE {}").format(corpus.ident(corpus.postings)))
    core.clear_stats_cache()
    return timings


async def evaluate(
    pool: AsyncConnectionPool,
    data: Dataset,
    service: service_mod.EmbeddingService | None,
    *,
    modes: Sequence[str] = core.MODES,
    params: core.Params | None = None,
) -> dict[str, Any]:
    """nDCG@10 and recall@100 per mode over the dataset's judged queries."""
    corpus = corpus_for(data.name)
    base = params or core.Params()
    qids = sorted(data.queries)
    needs_vectors = any(m in ("semantic", "hybrid") for m in modes)
    vectors: dict[str, np.ndarray] = {}
    if needs_vectors:
        if service is None:
            raise ValueError("semantic and hybrid modes need an embedding service")
        result = await service.embed([data.queries[q] for q in qids])
        vectors = dict(zip(qids, result.vectors, strict=True))
    report: dict[str, Any] = {
        "dataset": data.name,
        "queries": len(qids),
        "documents": len(data.corpus),
        "model": service.model if service is not None else None,
        "modes": {},
    }
    for mode in modes:
        # one extra hit, for the query's own document that judged() may drop
        depth = EVAL_DEPTH + 1
        p = dataclasses.replace(
            base,
            mode=core.parse_mode(mode),
            limit=depth,
            offset=0,
            window=max(base.window, depth),
        )
        ndcg, recall = [], []
        t = time.monotonic()
        async with pool.connection() as conn:
            for q in qids:
                hits = await ranking.rank(
                    conn,
                    corpus,
                    query=data.queries[q],
                    embed_query=None,
                    where=core.no_filters(),
                    params=p,
                    vector=vectors.get(q),
                )
                ranked = judged(q, [str(h.id) for h in hits])
                ndcg.append(ndcg_at(ranked, data.qrels[q], 10))
                recall.append(recall_at(ranked, data.qrels[q], 100))
        report["modes"][mode] = {
            "ndcg@10": round(sum(ndcg) / len(ndcg), 4) if ndcg else 0.0,
            "recall@100": round(sum(recall) / len(recall), 4) if recall else 0.0,
            "seconds": round(time.monotonic() - t, 2),
        }
    return report


def verdict(report: dict[str, Any]) -> dict[str, Any]:
    """What the acceptance check reads: hybrid above each of its branches and above the
    reference BM25, and how far the SQL keyword branch is from that reference (nDCG@10)."""
    modes = report.get("modes", {})
    out: dict[str, Any] = {}
    hybrid = modes.get("hybrid", {}).get("ndcg@10")
    for branch in ("keyword", "semantic"):
        other = modes.get(branch, {}).get("ndcg@10")
        if hybrid is not None and other is not None:
            out[f"hybrid_beats_{branch}"] = hybrid > other
    reference = report.get("reference", {}).get("ndcg@10")
    if reference is not None:
        if hybrid is not None:
            out["hybrid_beats_reference_bm25"] = hybrid > reference
        keyword = modes.get("keyword", {}).get("ndcg@10")
        if keyword is not None:
            out["keyword_minus_reference_bm25"] = round(keyword - reference, 4)
    return out

"""The quality harness: rank a BEIR benchmark with the product's own search code.

``clipembed eval beir DIR`` loads a BEIR-format directory (``corpus.jsonl[.gz]``,
``queries.jsonl``, ``qrels/test.tsv``) into tables of its own (``beir_<name>_docs`` with the
same postings machinery as ``clips``), embeds the documents (``title + " " + text``) through the
configured embedding service — cached in Redis, so a second run costs no model time — and
reports nDCG@10 and recall@100 for each search mode.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import json
import math
import re
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from clipembed.search import core
from clipembed.service import EmbeddingService

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


def _find(directory: Path, stem: str) -> Path:
    for candidate in (directory / f"{stem}.jsonl", directory / f"{stem}.jsonl.gz"):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"{directory} has no {stem}.jsonl[.gz]")


def load(directory: Path, *, split: str = "test") -> Dataset:
    corpus = {}
    for line in _lines(_find(directory, "corpus")):
        if line.strip():
            doc = json.loads(line)
            corpus[str(doc["_id"])] = (doc.get("title") or "", doc.get("text") or "")
    queries = {}
    for line in _lines(_find(directory, "queries")):
        if line.strip():
            q = json.loads(line)
            queries[str(q["_id"])] = q["text"]
    qrels: dict[str, dict[str, int]] = {}
    with open(directory / "qrels" / f"{split}.tsv", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter="\t")
        for row in reader:
            if not row or row[0] == "query-id":
                continue
            qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    queries = {q: t for q, t in queries.items() if q in qrels}
    name = re.sub(r"[^a-z0-9_]", "_", directory.resolve().name.lower())[:40] or "corpus"
    return Dataset(name, corpus, queries, qrels)


# --- metrics (pure) -------------------------------------------------------------------------


def ndcg_at(ranked: Sequence[str], relevant: dict[str, int], k: int = 10) -> float:
    """nDCG@k with linear gains (trec_eval / pytrec_eval, as BEIR reports)."""
    dcg = sum(relevant.get(doc, 0) / math.log2(i + 2) for i, doc in enumerate(ranked[:k]))
    ideal = sorted(relevant.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at(ranked: Sequence[str], relevant: dict[str, int], k: int = 100) -> float:
    wanted = {d for d, g in relevant.items() if g > 0}
    return len(wanted.intersection(ranked[:k])) / len(wanted) if wanted else 0.0


# --- tables ---------------------------------------------------------------------------------


def corpus_for(name: str) -> core.Corpus:
    return core.Corpus(
        table=f"beir_{name}_docs",
        postings=f"beir_{name}_postings",
        doclen=f"beir_{name}_doclen",
        field_weights=(TITLE_WEIGHT, 1.0, 1.0, 1.0),
    )


SCHEMA = """
CREATE TABLE IF NOT EXISTS {docs} (
    id text PRIMARY KEY,
    title text NOT NULL,
    body text NOT NULL,
    search_vector tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english', title), 'A') || setweight(to_tsvector('english', body), 'D')
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
DROP TRIGGER IF EXISTS beir_postings ON {docs};
CREATE TRIGGER beir_postings AFTER INSERT ON {docs}
    FOR EACH ROW EXECUTE FUNCTION clipembed_postings_update({postings_name}, {doclen_name});
"""


async def prepare(
    pool: AsyncConnectionPool, data: Dataset, service: EmbeddingService
) -> dict[str, Any]:
    """Create and fill the corpus tables; embed what is missing. Returns timings."""
    corpus = corpus_for(data.name)
    timings: dict[str, Any] = {}
    key = f"{service.model}:{service.dimensions}"
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = to_regclass(%s) AND attname = 'embedding'",
            (corpus.table,),
        )
        row = await cur.fetchone()
        if row and row[0] != f"vector({service.dimensions})":
            await conn.execute(
                sql.SQL("DROP TABLE {} CASCADE").format(sql.Identifier(corpus.table))
            )
        await conn.execute(
            sql.SQL(SCHEMA).format(
                docs=sql.Identifier(corpus.table),
                postings=sql.Identifier(corpus.postings),
                doclen=sql.Identifier(corpus.doclen),
                dims=sql.Literal(service.dimensions),
                postings_name=sql.Literal(corpus.postings),
                doclen_name=sql.Literal(corpus.doclen),
            )
        )
        cur = await conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(corpus.table))
        )
        have = (await cur.fetchone() or (0,))[0]
        await conn.commit()
        t = time.monotonic()
        if have != len(data.corpus):
            await conn.execute(sql.SQL("TRUNCATE {} CASCADE").format(sql.Identifier(corpus.table)))
            async with (
                conn.cursor() as c,
                c.copy(
                    sql.SQL("COPY {} (id, title, body) FROM STDIN").format(
                        sql.Identifier(corpus.table)
                    )
                ) as copy,
            ):
                for doc_id, (title, text) in data.corpus.items():
                    await copy.write_row(
                        (doc_id, title.replace("\x00", ""), text.replace("\x00", ""))
                    )
            await conn.commit()
        timings["load_seconds"] = round(time.monotonic() - t, 2)
        cur = await conn.execute(
            sql.SQL("SELECT id FROM {} WHERE embedding_key IS DISTINCT FROM %s ORDER BY id").format(
                sql.Identifier(corpus.table)
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
                    sql.Identifier(corpus.table)
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
            ).format(sql.Identifier(f"{corpus.table}_hnsw"), sql.Identifier(corpus.table))
        )
        await conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(corpus.postings)))
    core.clear_stats_cache()
    return timings


async def evaluate(
    pool: AsyncConnectionPool,
    data: Dataset,
    service: EmbeddingService,
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
        result = await service.embed([data.queries[q] for q in qids])
        vectors = dict(zip(qids, result.vectors, strict=True))
    report: dict[str, Any] = {
        "dataset": data.name,
        "queries": len(qids),
        "documents": len(data.corpus),
        "model": service.model,
        "modes": {},
    }
    for mode in modes:
        p = dataclasses.replace(base, mode=mode, limit=100, offset=0, window=max(base.window, 100))  # type: ignore[arg-type]
        ndcg, recall = [], []
        t = time.monotonic()
        async with pool.connection() as conn:
            for q in qids:
                hits = await core.rank(
                    conn,
                    corpus,
                    query=data.queries[q],
                    embed_query=None,
                    where=core.no_filters(),
                    params=p,
                    vector=vectors.get(q),
                )
                ranked = [str(h.id) for h in hits]
                ndcg.append(ndcg_at(ranked, data.qrels[q], 10))
                recall.append(recall_at(ranked, data.qrels[q], 100))
        report["modes"][mode] = {
            "ndcg@10": round(sum(ndcg) / len(ndcg), 4) if ndcg else 0.0,
            "recall@100": round(sum(recall) / len(recall), 4) if recall else 0.0,
            "seconds": round(time.monotonic() - t, 2),
        }
    return report

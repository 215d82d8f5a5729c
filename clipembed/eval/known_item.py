"""``clipembed eval known-item FILE``: can a user find a clip by a word from inside its title?

Queries are built from real titles, by the analysis of each title's language:

- CJK titles: the title is cut into script runs (Han, katakana, hiragana, Hangul words); the
  query is the rarest run of 2+ characters that is not the whole title (``ガチャ`` from
  ``貰ったガチャでSRを出したとと``) — the word a user remembers, with no spaces around it;
- other titles: the rarest word of 4+ letters; where the language has a snowball stemmer the
  query word is *inflected differently* from the title (``jugar`` for ``jugando``...): a
  variant that the language's stemmer (PyStemmer, the ``eval`` extra) maps to the same stem.

The known item is the clip the word came from (a clip with the very same title counts too:
nothing can tell them apart). A word shared by more than ``MAX_TITLES_PER_WORD`` titles cannot
identify one, so a title whose every word is that common gets no query. Reported per mode and per language: success@10 and MRR@10.
Documents live in the ``clipembed_eval`` schema, analysed exactly as ``clips`` is.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import random
import re
import time
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from clipembed import clips
from clipembed.embedding import service as service_mod
from clipembed.eval import beir
from clipembed.search import core, languages, ranking

CUTOFF = 10
#: A word found in more titles than this cannot identify one clip: such titles get no query.
MAX_TITLES_PER_WORD = 5
EMBED_CHUNK = 256
CJK_LANGUAGES = ("ja", "ko", "zh")
#: PyStemmer's algorithm per clip language (the languages clipembed_language_config stems).
STEMMERS = {
    "en": "english", "es": "spanish", "de": "german", "pt": "portuguese", "ru": "russian",
    "fr": "french", "it": "italian", "nl": "dutch", "sv": "swedish", "no": "norwegian",
    "da": "danish", "fi": "finnish", "tr": "turkish", "hu": "hungarian", "ro": "romanian",
}  # fmt: skip
SUFFIXES = ("s", "es", "e", "en", "er", "a", "o", "os", "as", "ar", "ing", "ed", "ы", "и", "а")
_WORD = re.compile(r"[^\W\d_]{4,}")
_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+|[\u30a0-\u30ff\u31f0-\u31ff]+"
                  r"|[\u3040-\u309f]+|[\uac00-\ud7af\u1100-\u11ff\u3130-\u318f]+")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Doc:
    id: str
    title: str
    broadcaster: str
    creator: str
    game: str | None
    language: str


@dataclasses.dataclass(frozen=True)
class Query:
    doc_id: str
    text: str
    language: str
    inflected: bool


def read(path: Path, *, limit: int | None = None) -> list[Doc]:
    """Clips (the import format) or stream titles (creator = broadcaster); empty titles skipped."""
    opener: Any = gzip.open if path.suffix == ".gz" else open
    docs: list[Doc] = []
    with opener(path, "rt", encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            r = json.loads(line)
            title = clips.sanitize(r.get("title") or "")
            if not title:
                continue
            broadcaster = r.get("broadcaster_name") or ""
            docs.append(
                Doc(
                    str(r.get("twitch_clip_id") or r.get("stream_id") or number),
                    title,
                    broadcaster,
                    r.get("creator_name") or broadcaster,
                    r.get("game_name"),
                    (r.get("language") or "").lower()[:2],
                )
            )
            if limit is not None and len(docs) >= limit:
                break
    return docs


def _normal(text: str) -> str:
    return unicodedata.normalize("NFKC", text).lower()


def candidates(doc: Doc) -> list[str]:
    title = _normal(doc.title)
    if languages.is_cjk_query(title):
        runs = [m.group() for m in _RUN.finditer(title)]
        # hiragana runs are mostly particles and endings: a user types the content words
        return [
            r
            for r in runs
            if sum(unicodedata.category(c).startswith("L") for c in r) >= 2
            and r != title
            and not re.fullmatch(r"[ぁ-ゟ]+", r)
        ]
    return [w for w in _WORD.findall(title) if w != title]


def inflect(word: str, language: str) -> str | None:
    """A different surface form with the same snowball stem, or None (no stemmer, no variant)."""
    algorithm = STEMMERS.get(language)
    if algorithm is None:
        return None
    import Stemmer  # the eval extra (PyStemmer)

    stem = Stemmer.Stemmer(algorithm).stemWord
    target = stem(word)
    forms = [word + s for s in SUFFIXES]
    forms += [word[: -len(s)] + t for s in SUFFIXES if word.endswith(s) for t in SUFFIXES]
    forms += [word[: -len(s)] for s in SUFFIXES if word.endswith(s) and len(word) - len(s) >= 4]
    for form in dict.fromkeys(forms):
        if form != word and stem(form) == target:
            return form
    return None


def build_queries(docs: list[Doc], *, seed: int = 7, per_language: int = 150) -> list[Query]:
    """At most ``per_language`` known-item queries per language, reproducible from ``seed``."""
    frequency: Counter[str] = Counter()
    for d in docs:
        frequency.update(set(candidates(d)))
    rng = random.Random(seed)
    order = list(docs)
    rng.shuffle(order)
    taken: dict[str, int] = defaultdict(int)
    out: list[Query] = []
    for d in order:
        lang = d.language or "?"
        if taken[lang] >= per_language:
            continue
        words = [w for w in candidates(d) if frequency[w] <= MAX_TITLES_PER_WORD]
        if not words:
            continue
        word = min(words, key=lambda w: (frequency[w], -len(w), w))
        inflected = None if languages.is_cjk_query(word) else inflect(word, d.language)
        out.append(Query(d.id, inflected or word, lang, inflected is not None))
        taken[lang] += 1
    return out


def corpus_for(name: str) -> core.Corpus:
    return core.Corpus(
        schema=beir.SCHEMA_NAME,
        table=f"ki_{name}_docs",
        postings=f"ki_{name}_postings",
        doclen=f"ki_{name}_doclen",
        field_weights=(2.0, 1.0, 0.5, 1.0),  # as clips
        query_configs=languages.QUERY_CONFIGS,
    )


TABLES = """
CREATE SCHEMA IF NOT EXISTS {schema};
DROP TABLE IF EXISTS {postings}, {doclen}, {docs} CASCADE;
CREATE TABLE {docs} (
    id text PRIMARY KEY, title text NOT NULL, broadcaster text NOT NULL, creator text NOT NULL,
    game text, language text,
    search_vector tsvector GENERATED ALWAYS AS (
        setweight(clipembed_tsvector(clipembed_language_config(language), title), 'A')
        || setweight(clipembed_tsvector(clipembed_language_config(language), creator), 'B')
        || setweight(clipembed_tsvector(clipembed_language_config(language), broadcaster), 'B')
        || setweight(clipembed_tsvector(clipembed_language_config(language), game), 'C')
    ) STORED,
    embedding vector({dims})
);
CREATE TABLE {postings} (
    lexeme text NOT NULL, doc_id text NOT NULL REFERENCES {docs} (id) ON DELETE CASCADE,
    tf_a smallint NOT NULL, tf_b smallint NOT NULL, tf_c smallint NOT NULL, tf_d smallint NOT NULL,
    len_a integer NOT NULL, len_b integer NOT NULL, len_c integer NOT NULL, len_d integer NOT NULL,
    PRIMARY KEY (lexeme, doc_id) INCLUDE (tf_a, tf_b, tf_c, tf_d, len_a, len_b, len_c, len_d)
);
CREATE TABLE {doclen} (
    doc_id text PRIMARY KEY REFERENCES {docs} (id) ON DELETE CASCADE,
    len_a integer NOT NULL, len_b integer NOT NULL, len_c integer NOT NULL, len_d integer NOT NULL
);
"""


async def prepare(
    pool: AsyncConnectionPool,
    name: str,
    docs: list[Doc],
    service: service_mod.EmbeddingService | None,
    *,
    dimensions: int,
) -> None:
    """(Re)create the corpus tables, load the documents, build postings, embed if asked."""
    corpus = corpus_for(name)
    unique = list({d.id: d for d in docs}.values())
    async with pool.connection() as conn:
        await conn.execute(
            sql.SQL(TABLES).format(
                schema=sql.Identifier(beir.SCHEMA_NAME),
                docs=corpus.ident(corpus.table),
                postings=corpus.ident(corpus.postings),
                doclen=corpus.ident(corpus.doclen),
                dims=sql.Literal(dimensions),
            )
        )
        copy_stmt = sql.SQL(
            "COPY {} (id, title, broadcaster, creator, game, language) FROM STDIN"
        ).format(corpus.ident(corpus.table))
        async with conn.cursor() as cur, cur.copy(copy_stmt) as copy:
            for d in unique:
                await copy.write_row((d.id, d.title, d.broadcaster, d.creator, d.game, d.language))
        await conn.execute(beir.bulk_postings(corpus))
        await conn.commit()
    if service is not None:
        update = sql.SQL("UPDATE {} SET embedding = %s WHERE id = %s").format(
            corpus.ident(corpus.table)
        )
        for start in range(0, len(unique), EMBED_CHUNK):
            chunk = unique[start : start + EMBED_CHUNK]
            texts = [
                clips.embedding_text(clips.ClipText(d.title, d.broadcaster, d.creator, d.game))
                for d in chunk
            ]
            vectors = (await service.embed(texts)).vectors
            async with pool.connection() as conn, conn.cursor() as cur:
                await cur.executemany(
                    update, [(v, d.id) for v, d in zip(vectors, chunk, strict=True)]
                )
    async with pool.connection() as conn:
        await conn.execute(sql.SQL("ANALYZE {}").format(corpus.ident(corpus.postings)))
        await conn.commit()
    core.clear_stats_cache()


async def evaluate(
    pool: AsyncConnectionPool,
    name: str,
    docs: list[Doc],
    queries: list[Query],
    service: service_mod.EmbeddingService | None,
    *,
    modes: Iterable[str] = core.MODES,
    multilingual: bool = False,
) -> dict[str, Any]:
    """success@10 and MRR@10 per mode, overall and per language."""
    corpus = corpus_for(name)
    same_title: dict[str, set[str]] = defaultdict(set)
    by_title: dict[str, set[str]] = defaultdict(set)
    for d in docs:
        by_title[d.title].add(d.id)
    for d in docs:
        same_title[d.id] = by_title[d.title]
    vectors: dict[str, Any] = {}
    modes = list(modes)
    if service is not None and any(m != "keyword" for m in modes):
        texts = sorted({q.text for q in queries})
        result = await service.embed(texts)
        vectors = dict(zip(texts, result.vectors, strict=True))
    report: dict[str, Any] = {
        "dataset": name,
        "documents": len(docs),
        "queries": len(queries),
        "inflected_queries": sum(q.inflected for q in queries),
        "model": service.model if service is not None else None,
        "modes": {},
    }
    for mode in modes:
        per_lang: dict[str, list[float]] = defaultdict(list)
        ranks: dict[str, list[float]] = defaultdict(list)
        t = time.monotonic()
        async with pool.connection() as conn:
            for q in queries:
                params = core.Params(mode=core.parse_mode(mode), limit=CUTOFF)
                params = languages.fusion_for(q.text, params, multilingual=multilingual)
                hits = await ranking.rank(
                    conn,
                    corpus,
                    query=q.text,
                    embed_query=None,
                    where=core.no_filters(),
                    params=params,
                    vector=vectors.get(q.text),
                )
                wanted = same_title[q.doc_id]
                position = next((h.rank for h in hits if str(h.id) in wanted), None)
                for key in (q.language, "all"):
                    per_lang[key].append(1.0 if position else 0.0)
                    ranks[key].append(1.0 / position if position else 0.0)
        report["modes"][mode] = {
            lang: {
                "queries": len(values),
                "success@10": round(sum(values) / len(values), 4),
                "mrr@10": round(sum(ranks[lang]) / len(values), 4),
            }
            for lang, values in sorted(per_lang.items())
        }
        report["modes"][mode]["all"]["seconds"] = round(time.monotonic() - t, 2)
    return report

"""Every statement search sends, in one place; composed only with :mod:`psycopg.sql`.

Templates take identifiers (``{table}``, ``{postings}``: the corpus's, through
``Corpus.ident``) and SQL fragments built from our own filters (``{where}``, ``{base}``);
user values are always bound parameters (``%(name)s``), never text in the statement.
"""

from __future__ import annotations

from psycopg import sql

#: The query's lexemes under each of the corpus's configurations (CJK as bigrams), by
#: PostgreSQL's own parser and stemmers (migration 0005), each with its document frequency
#: counted up to %(cap)s (a bounded index-only probe): user text never reaches the tsquery
#: parser, so quotes, operators and SQL fragments are plain words.
LEXEMES = sql.SQL(
    "SELECT l, (SELECT count(*) FROM (SELECT 1 FROM {postings} p WHERE p.lexeme = l"
    " LIMIT %(cap)s) s) FROM unnest(clipembed_query_lexemes(%(q)s, %(configs)s::regconfig[])) AS l"
)

#: Common lexemes' document frequencies, each counted up to %(cap)s (NULL: exactly).
LEXEME_COUNTS = sql.SQL(
    "SELECT l, (SELECT count(*) FROM (SELECT 1 FROM {postings} p WHERE p.lexeme = l"
    " LIMIT %(cap)s) s) FROM unnest(%(lexemes)s::text[]) AS l"
)

#: (N, avgdl) for BM25 with the corpus's field weights ({wa}..{wd} literals, {t} the doclen).
CORPUS_STATS = sql.SQL(
    "SELECT count(*), coalesce(avg({wa} * len_a + {wb} * len_b + {wc} * len_c + {wd} * len_d), 0)"
    " FROM {t}"
)

# One index-only range scan of the covering primary key per query term gives tf and the
# document's lengths; each term's weight (idf * (k1 + 1)) comes with it (idf from the document
# frequencies: a window count over the postings spilled to disk at a million clips), scores are
# summed per document, and the filters are a semi-join on the corpus table's primary key.
# BM25 is folded (``bm25.folded``): a posting costs two weighted sums and one division, each
# computed once (``OFFSET 0`` keeps ``p`` a subquery, so ``tf`` is not re-evaluated for every
# use): 18 % less time than the textbook form on the heaviest queries at a million clips.
# ``ranked`` keeps the best %(depth)s documents (NULL: all) — a top-N heapsort instead of
# sorting every matching document; ``ranked_n`` tells the caller whether that cut was reached,
# so a filter that removes more than the margin is answered by a second run without it. The
# final ORDER BY is explicit: an earlier version relied on a nested loop preserving the CTE's
# order, and the planner did not always oblige (8 of 50 SciFact queries got a wrong top 200).
KEYWORD = sql.SQL(
    """
WITH q AS (
    SELECT * FROM unnest(%(lexemes)s::text[], %(weights)s::float8[]) AS q(lexeme, w)
), p AS (
    SELECT p.doc_id, q.w,
           %(wa)s * p.tf_a + %(wb)s * p.tf_b + %(wc)s * p.tf_c + %(wd)s * p.tf_d AS tf,
           %(n0)s + %(la)s * p.len_a + %(lb)s * p.len_b + %(lc)s * p.len_c + %(ld)s * p.len_d
               AS norm
    FROM q JOIN {postings} p ON p.lexeme = q.lexeme
    OFFSET 0
), ranked AS MATERIALIZED (
    SELECT doc_id, sum(w * tf / (tf + norm)) AS score
    FROM p
    WHERE tf > 0
    GROUP BY doc_id
    ORDER BY score DESC, doc_id
    LIMIT %(depth)s
)
SELECT r.doc_id, r.score, (SELECT count(*) FROM ranked) AS ranked_n
FROM ranked r
WHERE EXISTS (SELECT 1 FROM {table} d WHERE d.id = r.doc_id AND ({base}) AND ({where}))
ORDER BY r.score DESC, r.doc_id
LIMIT %(n_results)s
"""
)

# The same ranking for a selective filter (one game, one broadcaster): probing documents in
# score order until the window is full costs one primary-key lookup per candidate, ~7,400 of
# them for a game holding 2.7% of 100,000 clips (keyword p95 40 ms); materialising the filtered
# ids first (an index scan) and hash-joining them is 3x faster there (p95 12 ms), but far
# slower without a selective filter (it would materialise every live clip). The caller knows
# which case it has (``filter_first``). idf is still from document frequencies over all postings.
KEYWORD_FILTER_FIRST = sql.SQL(
    """
WITH q AS (
    SELECT * FROM unnest(%(lexemes)s::text[], %(weights)s::float8[]) AS q(lexeme, w)
), p AS MATERIALIZED (
    SELECT p.doc_id, q.w,
           %(wa)s * p.tf_a + %(wb)s * p.tf_b + %(wc)s * p.tf_c + %(wd)s * p.tf_d AS tf,
           %(n0)s + %(la)s * p.len_a + %(lb)s * p.len_b + %(lc)s * p.len_c + %(ld)s * p.len_d
               AS norm
    FROM q JOIN {postings} p ON p.lexeme = q.lexeme
), f AS MATERIALIZED (
    SELECT d.id FROM {table} d WHERE ({base}) AND ({where})
)
SELECT p.doc_id, sum(w * tf / (tf + norm)) AS score, NULL::bigint AS ranked_n
FROM p JOIN f ON f.id = p.doc_id
WHERE tf > 0
GROUP BY p.doc_id
ORDER BY score DESC, p.doc_id
LIMIT %(n_results)s
"""
)

#: Top n by HNSW with the filters in the same WHERE (iterative scans fill a rare filter's page).
SEMANTIC = sql.SQL(
    """
SELECT id, distance FROM (
    SELECT d.id, d.{emb} <=> %(v)s AS distance
    FROM {table} d
    WHERE d.{emb} IS NOT NULL AND ({base}) AND ({where}) AND ({exclude})
    ORDER BY d.{emb} <=> %(v)s
    LIMIT %(n_results)s
) t
ORDER BY distance, id
"""
)

#: The same over a space's own vectors table (``e``), joined to the documents for the filters.
#: The query vector is cast to the space's storage type so that its HNSW index applies.
#: ``{keys}``: the filters that the space's own columns can test (game, broadcaster: migration
#: 0014), on the index tuple's own row, so a candidate of another game costs no join.
SEMANTIC_JOINED = sql.SQL(
    """
SELECT id, distance FROM (
    SELECT d.id, e.embedding <=> %(v)s::{vtype} AS distance
    FROM {vectors} e JOIN {table} d ON d.id = e.clip_id
    WHERE ({keys}) AND ({base}) AND ({where}) AND ({exclude})
    ORDER BY e.embedding <=> %(v)s::{vtype}
    LIMIT %(n_results)s
) t
ORDER BY distance, id
"""
)

#: The exact distance of given documents (the keyword branch's candidates that the vector branch
#: did not return), so that hybrid's vector ranking can take in those its index walk missed
#: (:func:`clipembed.search.ranking.complete`). Primary-key lookups; no filter here: the
#: keyword branch already applied them.
DISTANCES = sql.SQL(
    "SELECT d.id, d.{emb} <=> %(v)s FROM {table} d WHERE d.id = ANY(%(ids)s) AND d.{emb} IS NOT NULL"
)
DISTANCES_JOINED = sql.SQL(
    "SELECT e.clip_id, e.embedding <=> %(v)s::{vtype} FROM {vectors} e"
    " WHERE e.clip_id = ANY(%(ids)s)"
)

# A selective filter (one broadcaster, a small game) keeps few documents: their vectors are
# ranked exactly instead of through the HNSW graph, whose filtered scans miss neighbours (at a
# million clips, recall@10 0.65 for one game at ef_search 100). ``f`` takes at most %(cap)s + 1
# of the filtered ids through the filter's own index; when more are kept, the join does not run
# (a one-time filter) and the caller falls back to the index. The ranking is computed in a
# materialised CTE so that no plan can answer it from the HNSW index. One row always comes
# back: ``kept`` (up to cap + 1), with id and distance NULL when nothing was ranked.
SEMANTIC_EXACT = sql.SQL(
    """
WITH f AS MATERIALIZED (
    SELECT d.id FROM {table} d
    WHERE ({base}) AND ({where}) AND ({exclude})
    LIMIT %(cap)s + 1
), k AS (
    SELECT count(*) AS kept FROM f
), scored AS MATERIALIZED (
    SELECT f.id, {distance} AS distance
    FROM f JOIN {source}
    WHERE (SELECT kept FROM k) <= %(cap)s AND {present}
), top AS (
    SELECT id, distance FROM scored ORDER BY distance, id LIMIT %(n_results)s
)
SELECT k.kept, top.id, top.distance FROM k LEFT JOIN top ON TRUE
ORDER BY top.distance, top.id
"""
)

# The exact ranking by the space's own filter columns (game, broadcaster: migration 0014): ``f``
# reads at most %(cap)s + 1 of the space's rows through the key's B-tree and takes each one's
# distance on the way (no second lookup of the vector, no join per row); ``near`` keeps the
# nearest %(probe)s of them, and only those are checked against the documents (``{table}``:
# base filter, the filters themselves, the excluded id). The caller asks again with every kept
# row as the probe when fewer than it needs pass. ``near`` is materialised and the final
# ORDER BY is explicit: an ORDER BY in a subquery that the planner flattens into a semi-join is
# not kept (a first version relied on it and answered a game at a million clips with arbitrary
# clips of that game, recall 0, while a 60-clip test passed). The keys are a prefilter and the
# documents the truth: a clip whose game changed a moment ago and is not re-embedded yet is
# missed for that moment, never shown under the wrong game. Same result shape as
# SEMANTIC_EXACT.
SEMANTIC_EXACT_KEYED = sql.SQL(
    """
WITH f AS MATERIALIZED (
    SELECT e.clip_id AS id, e.embedding <=> %(v)s::{vtype} AS distance
    FROM {vectors} e
    WHERE ({keys})
    LIMIT %(cap)s + 1
), k AS (
    SELECT count(*) AS kept FROM f
), near AS MATERIALIZED (
    SELECT id, distance FROM f
    WHERE (SELECT kept FROM k) <= %(cap)s
    ORDER BY distance, id
    LIMIT %(probe)s
), top AS (
    SELECT n.id, n.distance FROM near n
    WHERE EXISTS (
        SELECT 1 FROM {table} d
        WHERE d.id = n.id AND ({base}) AND ({where}) AND ({exclude})
    )
)
SELECT k.kept, top.id, top.distance FROM k LEFT JOIN top ON TRUE
ORDER BY top.distance, top.id
"""
)

PGVECTOR_VERSION = "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
#: The index scan's settings, in its transaction: HNSW's ef_search and IVFFlat's probes (a
#: space's index is either kind, CLIPEMBED_INDEX_KIND; the other's setting is unused).
#: ``enable_seqscan`` off: with ef_search 200 the
#: planner prices the index above a full scan and an exact sort on a small table, and chose
#: that at 3,504 clips (~4 ms of server CPU per search against ~0.6 ms through the index;
#: under 64 concurrent searches that CPU is the local model's: docs/notes/query-lane.md). Only
#: plans reading a whole table change: one the planner chose without a sequential scan stays.
SET_EF_SEARCH = (
    "SELECT set_config('hnsw.ef_search', %s, true), set_config('ivfflat.probes', %s, true), "
    "set_config('enable_seqscan', 'off', true)"
)
#: the same, scanning on until enough rows pass the filters, in one round trip (pgvector >= 0.8)
SET_EF_SEARCH_ITERATIVE = (
    "SELECT set_config('hnsw.ef_search', %s, true), set_config('ivfflat.probes', %s, true), "
    "set_config('hnsw.iterative_scan', 'relaxed_order', true), "
    "set_config('ivfflat.iterative_scan', 'relaxed_order', true), "
    "set_config('enable_seqscan', 'off', true)"
)
#: the same, with how far an iterative scan may go (a selective filter's): HNSW's index tuples,
#: IVFFlat's lists
SET_EF_SEARCH_ITERATIVE_FILTERED = (
    "SELECT set_config('hnsw.ef_search', %s, true), set_config('ivfflat.probes', %s, true), "
    "set_config('hnsw.iterative_scan', 'relaxed_order', true), "
    "set_config('ivfflat.iterative_scan', 'relaxed_order', true), "
    "set_config('hnsw.max_scan_tuples', %s, true), "
    "set_config('ivfflat.max_probes', %s, true), "
    "set_config('enable_seqscan', 'off', true)"
)

# ---------------------------------------------------------------- the clips corpus

#: The columns a clip result shows.
#: (migration 0010's ``clip_rows``: on an adopted table, clipembed's own over that table)
CLIP_ROWS = sql.SQL("SELECT * FROM clip_rows(%s::uuid[])")

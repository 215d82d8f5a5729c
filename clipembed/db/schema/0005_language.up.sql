-- Language-aware keyword analysis (docs/notes/search.md, "Languages").
-- * NFKC first: full-width Latin (Ｇａｍｅ) and half-width katakana (ｶﾞﾁｬ) become their usual forms.
-- * CJK runs (kana, Han, Hangul) are cut into overlapping character bigrams, as Lucene's CJK
--   analyzer does: no dictionary, any word inside a title is found, the same cut applies to the
--   query. A run of one character is kept as a unigram. Bigrams go through 'simple' (no stemming).
-- * Everything else goes through the snowball configuration of the clip's `language`
--   (clipembed_language_config); unknown or CJK languages keep 'english' for their Latin words.
-- The functions are IMMUTABLE so that generated columns (the eval harness) may use them; the
-- regconfig names they return are fixed built-ins.

CREATE OR REPLACE FUNCTION clipembed_language_config(lang text) RETURNS regconfig
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (CASE lower(split_part(split_part(coalesce(lang, ''), '-', 1), '_', 1))
        WHEN 'es' THEN 'spanish' WHEN 'de' THEN 'german' WHEN 'pt' THEN 'portuguese'
        WHEN 'ru' THEN 'russian' WHEN 'fr' THEN 'french' WHEN 'it' THEN 'italian'
        WHEN 'nl' THEN 'dutch' WHEN 'sv' THEN 'swedish' WHEN 'no' THEN 'norwegian'
        WHEN 'nb' THEN 'norwegian' WHEN 'da' THEN 'danish' WHEN 'fi' THEN 'finnish'
        WHEN 'tr' THEN 'turkish' WHEN 'hu' THEN 'hungarian' WHEN 'ro' THEN 'romanian'
        WHEN 'el' THEN 'greek' WHEN 'ar' THEN 'arabic' WHEN 'id' THEN 'indonesian'
        WHEN 'ca' THEN 'catalan' WHEN 'lt' THEN 'lithuanian' WHEN 'hi' THEN 'hindi'
        ELSE 'english' END)::regconfig
$$;

-- The CJK runs of a text as space-separated bigrams (a one-character run stays a unigram).
CREATE OR REPLACE FUNCTION clipembed_cjk_bigrams(txt text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(string_agg(
        CASE WHEN char_length(m.run) = 1 THEN m.run
             ELSE (SELECT string_agg(substr(m.run, i, 2), ' ' ORDER BY i)
                   FROM generate_series(1, char_length(m.run) - 1) AS i) END,
        ' ' ORDER BY m.n), '')
    FROM regexp_matches(
        txt,
        '[\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]+',
        'g'
    ) WITH ORDINALITY AS r(parts, n), LATERAL (SELECT r.parts[1] AS run, r.n AS n) AS m
$$;

-- The analysis of one field: Latin/Cyrillic/... words by `config`, CJK runs as bigrams.
CREATE OR REPLACE FUNCTION clipembed_tsvector(config regconfig, txt text) RETURNS tsvector
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT to_tsvector(config, regexp_replace(
               n.t,
               '[\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]+',
               ' ', 'g'))
           || to_tsvector('simple', clipembed_cjk_bigrams(n.t))
    FROM (SELECT normalize(coalesce(txt, ''), NFKC) AS t) AS n
$$;

-- A query's lexemes under each of `configs` (distinct): the query's language is unknown, so it
-- is analysed for every candidate and a document matches whichever its own language produced.
CREATE OR REPLACE FUNCTION clipembed_query_lexemes(q text, configs regconfig[]) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(DISTINCT u.lexeme), '{}')
    FROM unnest(configs) AS c(cfg), unnest(clipembed_tsvector(c.cfg, q)) AS u
$$;

CREATE OR REPLACE FUNCTION clips_search_vector_update() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    cfg regconfig := clipembed_language_config(NEW.language);
BEGIN
    NEW.search_vector :=
        setweight(clipembed_tsvector(cfg, NEW.title), 'A') ||
        setweight(clipembed_tsvector(cfg, NEW.creator_name), 'B') ||
        setweight(clipembed_tsvector(cfg, NEW.broadcaster_name), 'B') ||
        setweight(clipembed_tsvector(cfg, NEW.game_name), 'C');
    RETURN NEW;
END
$$;

-- The language now decides the analysis: an edit of it re-indexes the clip.
DROP TRIGGER clips_search_vector_trigger ON clips;
CREATE TRIGGER clips_search_vector_trigger
    BEFORE INSERT OR UPDATE OF title, creator_name, broadcaster_name, game_name, language ON clips
    FOR EACH ROW EXECUTE FUNCTION clips_search_vector_update();
DROP TRIGGER clips_postings_update ON clips;
CREATE TRIGGER clips_postings_update
    AFTER UPDATE OF title, creator_name, broadcaster_name, game_name, language ON clips
    FOR EACH ROW WHEN (OLD.search_vector IS DISTINCT FROM NEW.search_vector)
    EXECUTE FUNCTION clipembed_postings_update('clip_postings', 'clip_doclen');

-- Re-analyse the clips that exist (no embedding changes: the queue triggers watch the text
-- columns, not search_vector), then rebuild the postings set-based.
UPDATE clips SET search_vector =
    setweight(clipembed_tsvector(clipembed_language_config(language), title), 'A') ||
    setweight(clipembed_tsvector(clipembed_language_config(language), creator_name), 'B') ||
    setweight(clipembed_tsvector(clipembed_language_config(language), broadcaster_name), 'B') ||
    setweight(clipembed_tsvector(clipembed_language_config(language), game_name), 'C');
TRUNCATE clip_postings, clip_doclen;
INSERT INTO clip_doclen (doc_id, len_a, len_b, len_c, len_d)
SELECT c.id,
       count(u.lexeme) FILTER (WHERE w = 'A'), count(u.lexeme) FILTER (WHERE w = 'B'),
       count(u.lexeme) FILTER (WHERE w = 'C'), count(u.lexeme) FILTER (WHERE w = 'D')
FROM clips c
LEFT JOIN LATERAL unnest(c.search_vector) AS u ON true
LEFT JOIN LATERAL unnest(coalesce(u.weights, ARRAY['D']::text[])) AS w ON true
GROUP BY c.id;
INSERT INTO clip_postings (lexeme, doc_id, tf_a, tf_b, tf_c, tf_d, len_a, len_b, len_c, len_d)
SELECT t.lexeme, t.id, least(t.a, 32767), least(t.b, 32767), least(t.c, 32767), least(t.d, 32767),
       l.len_a, l.len_b, l.len_c, l.len_d
FROM (
    SELECT c.id, u.lexeme,
           count(*) FILTER (WHERE w = 'A') AS a, count(*) FILTER (WHERE w = 'B') AS b,
           count(*) FILTER (WHERE w = 'C') AS c, count(*) FILTER (WHERE w = 'D') AS d
    FROM clips c, unnest(c.search_vector) AS u, unnest(coalesce(u.weights, ARRAY['D']::text[])) AS w
    GROUP BY c.id, u.lexeme
) t JOIN clip_doclen l ON l.doc_id = t.id;

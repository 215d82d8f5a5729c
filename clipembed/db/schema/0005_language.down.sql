-- Back to english-only analysis (0001/0003), re-analysing and re-indexing every clip.
CREATE OR REPLACE FUNCTION clips_search_vector_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.search_vector :=
        setweight(to_tsvector('english', coalesce(NEW.title, '')), 'A') ||
        setweight(to_tsvector('english', coalesce(NEW.creator_name, '')), 'B') ||
        setweight(to_tsvector('english', coalesce(NEW.broadcaster_name, '')), 'B') ||
        setweight(to_tsvector('english', coalesce(NEW.game_name, '')), 'C');
    RETURN NEW;
END
$$;
DROP TRIGGER clips_search_vector_trigger ON clips;
CREATE TRIGGER clips_search_vector_trigger
    BEFORE INSERT OR UPDATE OF title, creator_name, broadcaster_name, game_name ON clips
    FOR EACH ROW EXECUTE FUNCTION clips_search_vector_update();
DROP TRIGGER clips_postings_update ON clips;
CREATE TRIGGER clips_postings_update
    AFTER UPDATE OF title, creator_name, broadcaster_name, game_name ON clips
    FOR EACH ROW WHEN (OLD.search_vector IS DISTINCT FROM NEW.search_vector)
    EXECUTE FUNCTION clipembed_postings_update('clip_postings', 'clip_doclen');
UPDATE clips SET search_vector =
    setweight(to_tsvector('english', coalesce(title, '')), 'A') ||
    setweight(to_tsvector('english', coalesce(creator_name, '')), 'B') ||
    setweight(to_tsvector('english', coalesce(broadcaster_name, '')), 'B') ||
    setweight(to_tsvector('english', coalesce(game_name, '')), 'C');
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
DROP FUNCTION IF EXISTS clipembed_query_lexemes(text, regconfig[]);
DROP FUNCTION IF EXISTS clipembed_tsvector(regconfig, text);
DROP FUNCTION IF EXISTS clipembed_cjk_bigrams(text);
DROP FUNCTION IF EXISTS clipembed_language_config(text);

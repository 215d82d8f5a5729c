-- BM25 keyword search on plain PostgreSQL: a postings table kept by a trigger.
-- PostgreSQL's english parser and stemmer produce the lexemes (search_vector); per lexeme and
-- document we keep the term frequency in each weight class (A title, B creator/broadcaster,
-- C game, D body), and per document its length in each class. Field weights, k1 and b are
-- applied at query time, so they can be tuned without re-indexing; document frequencies are
-- counted at query time from the (lexeme, doc_id) primary key, so the statistics are always
-- current and no hot counter row serialises concurrent writers.

-- One trigger function for any corpus: TG_ARGV[0] names the postings table, TG_ARGV[1] the
-- document-length table; both have doc_id referencing the corpus table's id. Term frequencies
-- are smallint (half the index size of integer): a document repeating one word more than 32,767
-- times is clamped there rather than refused (BM25 saturates long before that). Each posting
-- also carries its document's lengths, and the primary key INCLUDEs every column, so ranking a
-- term is one index-only range scan: no heap fetches, no join per posting.
CREATE OR REPLACE FUNCTION clipembed_postings_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('DELETE FROM %I WHERE doc_id = $1', TG_ARGV[0]) USING NEW.id;
    EXECUTE format($q$
        WITH t AS (
            SELECT u.lexeme,
                   count(*) FILTER (WHERE w = 'A') AS a, count(*) FILTER (WHERE w = 'B') AS b,
                   count(*) FILTER (WHERE w = 'C') AS c, count(*) FILTER (WHERE w = 'D') AS d
            FROM unnest($2) AS u, unnest(coalesce(u.weights, ARRAY['D']::text[])) AS w
            GROUP BY u.lexeme
        )
        INSERT INTO %I (lexeme, doc_id, tf_a, tf_b, tf_c, tf_d, len_a, len_b, len_c, len_d)
        SELECT t.lexeme, $1, least(t.a, 32767), least(t.b, 32767), least(t.c, 32767),
               least(t.d, 32767), l.a, l.b, l.c, l.d
        FROM t, (SELECT sum(a) AS a, sum(b) AS b, sum(c) AS c, sum(d) AS d FROM t) AS l
    $q$, TG_ARGV[0]) USING NEW.id, NEW.search_vector;
    EXECUTE format($q$
        INSERT INTO %I (doc_id, len_a, len_b, len_c, len_d)
        SELECT $1,
               count(*) FILTER (WHERE w = 'A'), count(*) FILTER (WHERE w = 'B'),
               count(*) FILTER (WHERE w = 'C'), count(*) FILTER (WHERE w = 'D')
        FROM unnest($2) AS u, unnest(coalesce(u.weights, ARRAY['D']::text[])) AS w
        ON CONFLICT (doc_id) DO UPDATE SET len_a = EXCLUDED.len_a, len_b = EXCLUDED.len_b,
            len_c = EXCLUDED.len_c, len_d = EXCLUDED.len_d
    $q$, TG_ARGV[1]) USING NEW.id, NEW.search_vector;
    RETURN NULL;
END
$$;

CREATE TABLE clip_postings (
    lexeme text NOT NULL,
    doc_id uuid NOT NULL REFERENCES clips (id) ON DELETE CASCADE,
    tf_a   smallint NOT NULL,
    tf_b   smallint NOT NULL,
    tf_c   smallint NOT NULL,
    tf_d   smallint NOT NULL,
    len_a  integer NOT NULL,
    len_b  integer NOT NULL,
    len_c  integer NOT NULL,
    len_d  integer NOT NULL,
    PRIMARY KEY (lexeme, doc_id) INCLUDE (tf_a, tf_b, tf_c, tf_d, len_a, len_b, len_c, len_d)
);
CREATE INDEX idx_clip_postings_doc ON clip_postings (doc_id);

CREATE TABLE clip_doclen (
    doc_id uuid PRIMARY KEY REFERENCES clips (id) ON DELETE CASCADE,
    len_a  integer NOT NULL,
    len_b  integer NOT NULL,
    len_c  integer NOT NULL,
    len_d  integer NOT NULL
);

CREATE TRIGGER clips_postings_insert
    AFTER INSERT ON clips
    FOR EACH ROW EXECUTE FUNCTION clipembed_postings_update('clip_postings', 'clip_doclen');
CREATE TRIGGER clips_postings_update
    AFTER UPDATE OF title, creator_name, broadcaster_name, game_name ON clips
    FOR EACH ROW WHEN (OLD.search_vector IS DISTINCT FROM NEW.search_vector)
    EXECUTE FUNCTION clipembed_postings_update('clip_postings', 'clip_doclen');

-- Index the clips that exist already.
INSERT INTO clip_doclen (doc_id, len_a, len_b, len_c, len_d)
SELECT c.id,
       count(*) FILTER (WHERE w = 'A'), count(*) FILTER (WHERE w = 'B'),
       count(*) FILTER (WHERE w = 'C'), count(*) FILTER (WHERE w = 'D')
FROM clips c, unnest(c.search_vector) AS u, unnest(coalesce(u.weights, ARRAY['D']::text[])) AS w
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

-- Case-insensitive filters of the search API.
CREATE INDEX idx_clips_lower_game ON clips (lower(game_name));
CREATE INDEX idx_clips_lower_broadcaster ON clips (lower(broadcaster_name));

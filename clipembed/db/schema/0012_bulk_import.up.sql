-- Bulk import (issue 20): `clipembed import --bulk` loads a file through a staging table and
-- one set-based upsert per chunk, then writes the chunk's search postings and queue rows in a
-- few statements. Its transaction sets `clipembed.bulk = 'on'` (SET LOCAL: no other session and
-- no later transaction sees it), and the two row triggers whose work it does itself return at
-- once. Every other writer is unaffected; the counters' statement triggers still run.

CREATE OR REPLACE FUNCTION clipembed_postings_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- `clipembed import --bulk` does this work set-based for its own transaction (0012)
    IF current_setting('clipembed.bulk', true) = 'on' THEN
        RETURN NULL;
    END IF;
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

CREATE OR REPLACE FUNCTION clipembed_enqueue() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- `clipembed import --bulk` does this work set-based for its own transaction (0012)
    IF current_setting('clipembed.bulk', true) = 'on' THEN
        RETURN NULL;
    END IF;
    IF NEW.is_removed THEN
        DELETE FROM embedding_queue WHERE clip_id = NEW.id;
        RETURN NULL;
    END IF;
    INSERT INTO embedding_queue AS q (clip_id, had_vector)
    VALUES (NEW.id, NEW.embedding IS NOT NULL)
    ON CONFLICT (clip_id) DO UPDATE
        SET generation = q.generation + 1,
            next_attempt_at = now(),
            attempts = 0,
            claims = 0,
            last_error = NULL,
            in_batch = NULL,
            had_vector = q.had_vector OR EXCLUDED.had_vector;
    DELETE FROM embedding_dead_letters WHERE clip_id = NEW.id;
    -- identical payloads are folded into one notification per transaction
    PERFORM pg_notify('clipembed_queue', '');
    RETURN NULL;
END
$$;

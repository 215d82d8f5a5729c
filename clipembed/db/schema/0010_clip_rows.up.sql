-- What a search result shows of a clip, read through one function (issue 17): on an owned
-- installation from this clips table; on an adopted one clipembed replaces it (in its own schema)
-- by a function over the adopted table itself, so that live view counts and votes are shown
-- without copying them. A string body: the catalog records no dependency on the columns.
CREATE OR REPLACE FUNCTION clip_rows(ids uuid[])
RETURNS TABLE (
    id uuid, twitch_clip_id text, twitch_clip_url text, embed_url text, title text,
    creator_name text, broadcaster_name text, game_name text, language text,
    thumbnail_url text, duration double precision, view_count integer, vote_score integer,
    created_at timestamptz, is_nsfw boolean
)
LANGUAGE sql STABLE AS '
    SELECT c.id, c.twitch_clip_id::text, c.twitch_clip_url, c.embed_url, c.title::text,
           c.creator_name::text, c.broadcaster_name::text, c.game_name::text, c.language::text,
           c.thumbnail_url, c.duration, c.view_count, c.vote_score, c.created_at, c.is_nsfw
    FROM clips c WHERE c.id = ANY(ids)
';

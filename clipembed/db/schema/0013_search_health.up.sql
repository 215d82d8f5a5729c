-- What each search server saw of its searches in its last second (issue 18): the mean time a
-- search pool request waited for its connection and then held it. `clipembed serve` writes its
-- own row once a second (clipembed.api.search_report) and deletes it when it stops; bulk work
-- reads the fresh rows and slows down while search suffers (clipembed.bulk.adaptive_pace).
CREATE TABLE clipembed_search_health (
    server      text PRIMARY KEY,             -- host:pid of the search server
    reported_at timestamptz NOT NULL,
    database_ms double precision NOT NULL,    -- mean wait + use per connection request
    requests    integer NOT NULL              -- connection requests in that second
);

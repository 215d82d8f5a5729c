"""What an operator needs to know, from PostgreSQL only: one status model for CLI, API and pages.

- :mod:`.queries` — every statement, composed with :mod:`psycopg.sql` where composed at all;
- :mod:`.rollups` — what the jobs write as they work (per-minute rollups, queue samples,
  worker heartbeats, events) and the pruning of old rows;
- :mod:`.model` — :func:`~clipembed.status.model.collect`, the one function every view reads.

Counts are exact and cheap at any size: clip totals come from trigger-maintained counters
(migration 0007), the queue and dead letters are small tables, rates come from rollups.
"""

"""The bulk paths: import, backfill, the index policy, pacing, progress and the run report.

The Batch API backfill (:mod:`clipembed.batches`) builds on these; nothing here knows the
queue's workers (:mod:`clipembed.realtime`)."""

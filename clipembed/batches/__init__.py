"""Half-price backfills through the OpenAI Batch API, safe across crashes.

- :mod:`.files` — request lines in, vectors and failures out (pure);
- :mod:`.queries` — the batches' SQL;
- :mod:`.runner` — plan, upload, submit, poll, apply; resumable at any line;
- :mod:`clipembed.embedding.providers.openai_batch` — the Files and Batch APIs through the official SDK.
"""

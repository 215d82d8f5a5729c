"""The real-time path: the SKIP LOCKED queue, its workers, the reconciliation sweep and the
scheduler that catches what the triggers missed (docs/notes/queue.md)."""

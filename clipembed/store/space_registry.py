"""The registry of embedding spaces (``embedding_spaces``) and its pointer to the active one."""

from __future__ import annotations

#: How many spaces there are (a backfill retires queue items only when it writes the only one).
SPACE_COUNT = "SELECT count(*) FROM embedding_spaces"

SPACE_COLUMNS = (
    "s.id, s.name, s.provider, s.model, s.dimensions, s.storage, s.template_version,"
    " s.table_name, s.created_at, s.promoted_at"
)

#: Every space with the pointer's view of it.
ALL = f"""
SELECT {SPACE_COLUMNS}, s.id = p.active_id AS active, s.id = p.previous_id AS previous
FROM embedding_spaces s CROSS JOIN embedding_space_pointer p
ORDER BY s.id
"""

#: The active space (one row).
ACTIVE = f"""
SELECT {SPACE_COLUMNS}, true AS active, false AS previous
FROM embedding_space_pointer p JOIN embedding_spaces s ON s.id = p.active_id
"""

POINTER = "SELECT active_id, previous_id, changed_at FROM embedding_space_pointer"

#: Lock the pointer for a promote/rollback/drop: they are serialised.
LOCK_POINTER = (
    "SELECT active_id, previous_id FROM embedding_space_pointer WHERE only_row FOR UPDATE"
)

SET_POINTER = """
UPDATE embedding_space_pointer SET active_id = %(active)s, previous_id = %(previous)s,
    changed_at = clock_timestamp()
WHERE only_row
"""

MARK_PROMOTED = "UPDATE embedding_spaces SET promoted_at = clock_timestamp() WHERE id = %s"

NOTIFY = "SELECT pg_notify('clipembed_spaces', %s)"

INSERT = """
INSERT INTO embedding_spaces (name, provider, model, dimensions, storage, table_name)
VALUES (%(name)s, %(provider)s, %(model)s, %(dimensions)s, %(storage)s, '')
RETURNING id
"""

SET_TABLE_NAME = "UPDATE embedding_spaces SET table_name = %s WHERE id = %s"

CREATE_TABLE = "SELECT clipembed_space_create(%s, true)"

REFRESH_VIEW = "SELECT clipembed_active_view_refresh()"

DELETE = "DELETE FROM embedding_spaces WHERE id = %s"

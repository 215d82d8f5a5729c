"""Applying every migration gives exactly the schema documented in docs/schema.md.

When a migration changes the schema on purpose, regenerate the document:
``CLIPEMBED_WRITE_SCHEMA_DOC=1 pytest tests/integration/test_schema_doc.py`` and review the diff.
"""

from __future__ import annotations

import os

import psycopg

from tests.conftest import ROOT

DOC = ROOT / "docs" / "schema.md"

TABLES = """
SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 1
"""
COLUMNS = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       coalesce(pg_get_expr(d.adbin, d.adrelid), '')
FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
"""
INDEXES = "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = %s ORDER BY indexname"
TRIGGERS = """
SELECT tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t
WHERE t.tgrelid = %s::regclass AND NOT t.tgisinternal ORDER BY tgname
"""


def describe(url: str) -> str:
    lines = [
        "# Database schema",
        "",
        "What `clipembed migrate up` creates (embedding dimension 768). Generated from a migrated",
        "database and checked by `tests/integration/test_schema_doc.py`; do not edit by hand.",
        "",
    ]
    with psycopg.connect(url) as conn:
        for (table,) in conn.execute(TABLES).fetchall():
            lines += [
                f"## {table}",
                "",
                "| column | type | not null | default |",
                "| --- | --- | --- | --- |",
            ]
            for name, typ, notnull, default in conn.execute(COLUMNS, (table,)).fetchall():
                escaped = default.replace("|", "\\|")
                lines.append(f"| {name} | {typ} | {'yes' if notnull else ''} | {escaped} |")
            indexes = [r[0] for r in conn.execute(INDEXES, (table,)).fetchall()]
            triggers = [r[1] for r in conn.execute(TRIGGERS, (table,)).fetchall()]
            if indexes:
                lines += ["", "Indexes:", ""] + [f"- `{i}`" for i in indexes]
            if triggers:
                lines += ["", "Triggers:", ""] + [f"- `{t}`" for t in triggers]
            lines.append("")
    return "\n".join(lines)


def test_migrations_give_the_documented_schema(database_url):
    actual = describe(database_url)
    if os.environ.get("CLIPEMBED_WRITE_SCHEMA_DOC"):
        DOC.write_text(actual)
    assert DOC.read_text() == actual, (
        "schema differs from docs/schema.md (see this module's docstring)"
    )

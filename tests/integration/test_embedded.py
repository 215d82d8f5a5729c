"""The embedded servers: one per state directory, shared by every process, gone with the last."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from clipembed import embedded
from tests.plugins.waiting import wait_until

#: Joins the embedded Redis of HOME, prints its port, then waits for a line on stdin.
JOIN = (
    "import sys\n"
    "from pathlib import Path\n"
    "from clipembed import embedded\n"
    "url = embedded.redis_url(Path(sys.argv[1]))\n"
    "print(url.rsplit(':', 1)[1].split('/')[0], flush=True)\n"
    "sys.stdin.readline()\n"
)


def processes_mentioning(path: Path) -> list[str]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(path) in cmdline and proc.pid != os.getpid():
            found.append(f"{proc.pid}: {cmdline}")
    return found


def test_processes_starting_together_share_one_redis_and_the_last_one_stops_it(tmp_path):
    home = tmp_path / "home"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", JOIN, str(home)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        ports = {p.stdout.readline().strip() for p in procs}
        assert len(ports) == 1 and ports != {""}, ports
        status = embedded.redis(home).status()
        assert status["running"] and sorted(status["users"]) == sorted(p.pid for p in procs)
        server = status["pid"]
        for p in procs[:3]:
            p.communicate("\n", timeout=30)
        assert psutil.pid_exists(server)  # one user left: still running
        assert embedded.redis(home).status()["users"] == [procs[3].pid]
        procs[3].communicate("\n", timeout=30)
        wait_until(lambda: not embedded._alive(server), what="the last user to stop redis")
        assert not embedded.redis(home).status()["running"]
    finally:
        for p in procs:
            p.kill()
        embedded.redis(home).stop()


def test_a_killed_user_is_pruned_and_stop_ends_the_server(tmp_path):
    home = tmp_path / "home"
    proc = subprocess.Popen(
        [sys.executable, "-c", JOIN, str(home)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip()
        proc.kill()  # no atexit: its pid stays in the list
        proc.wait(10)
        status = embedded.redis(home).status()
        assert status["running"] and status["users"] == []  # the dead pid is not a user
        assert embedded.redis(home).stop() is True
        wait_until(lambda: not embedded._alive(status["pid"]), what="redis to stop")
        assert embedded.redis(home).stop() is False
    finally:
        proc.kill()
        embedded.redis(home).stop()


@pytest.mark.local_model
def test_the_demo_on_embedded_servers_leaves_no_process_running(tmp_path):
    """`make demo` as a new user runs it: embedded PostgreSQL and Redis, nothing left after."""
    home = tmp_path / "home"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("EMBEDDING_", "OPENAI_", "CLIPEMBED_", "REDIS_", "DATABASE_"))
    }
    env.update(CLIPEMBED_HOME=str(home), CLIPEMBED_DEMO_CLIPS="30")
    out = subprocess.run(
        [sys.executable, "-m", "clipembed.demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    try:
        assert out.returncode == 0, out.stderr[-3000:]
        assert "Processed:        30" in out.stdout and "Redis cache on" in out.stdout
        assert not embedded.postgres_status(home)["running"]
        assert not embedded.redis(home).status()["running"]
        assert processes_mentioning(home) == []
    finally:
        embedded.stop_postgres(home)
        embedded.redis(home).stop()

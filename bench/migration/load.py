"""The load generator: open-loop searches over HTTP and inserts through psycopg, every answer recorded."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import threading
import time
import urllib.parse
import urllib.request
from typing import Any

import psycopg

from bench.migration.constants import (
    TIMEOUT_S,
)
from clipembed import demo_data


# --- the load ----------------------------------------------------------------------------------
class Http:
    """A minimal HTTP/1.1 keep-alive client (GET, Content-Length bodies): the load generator
    must cost little CPU on a 2-core machine (httpx took ~0.3 core at 20 requests/s). A request
    takes an idle connection or opens one: nothing waits on the client's side, so a backlog
    forms in the server, where it is measured."""

    def __init__(self, base: str) -> None:
        parsed = urllib.parse.urlparse(base)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.opened = 0
        self.reopened = 0  # idle connections found closed by the server

    async def get(self, path: str) -> tuple[int, bytes]:
        while self.idle:  # an idle connection the server has closed meanwhile: take another
            reader, writer = self.idle.pop()
            try:
                return await self._exchange(reader, writer, path)
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                if getattr(exc, "partial", b""):
                    raise
                self.reopened += 1
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self.opened += 1
        return await self._exchange(reader, writer, path)

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str
    ) -> tuple[int, bytes]:
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in lines[1:] if line)
            }
            body = await reader.readexactly(int(headers["content-length"]))
        except BaseException:
            writer.close()
            raise
        if headers.get("connection", "").lower() == "close":
            writer.close()
        else:
            self.idle.append((reader, writer))
        return status, body

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


class Load:
    """Searches over HTTP and INSERTs on fixed schedules (open loop), on a thread of its own."""

    def __init__(
        self,
        *,
        base: str,
        url: str,
        search_rate: float,
        insert_rate: float,
        words: list[str],
        insert_clients: int = 4,
        seed: int = 7,
    ) -> None:
        self.base = base
        self.url = url
        self.search_rate = search_rate
        self.insert_rate = insert_rate
        self.words = words
        self.rng = random.Random(seed)
        self.searches: list[dict[str, Any]] = []
        self.inserts: list[tuple[float, str]] = []
        self.insert_errors: list[str] = []
        self.insert_clients = insert_clients
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self.started = 0.0
        self.stopped = 0.0  # no request scheduled after this
        self.ended = 0.0  # every request answered

    def start(self) -> None:
        self.started = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        self.stopped = time.monotonic()
        self._stop.set()
        self._thread.join(TIMEOUT_S + 30)
        self.ended = time.monotonic()

    def query(self) -> tuple[str, str]:
        n = 1 if self.rng.random() < 0.5 else 2
        text = " ".join(self.rng.sample(self.words, n))
        return text, ("semantic" if self.rng.random() < 0.5 else "hybrid")

    async def _main(self) -> None:
        client = Http(self.base)
        clips = itertools.cycle(list(demo_data.generate(20_000, seed=2)))
        t0 = time.monotonic()
        try:
            await asyncio.gather(
                self._searches(client),
                *(self._inserts(k, clips, t0) for k in range(self.insert_clients)),
            )
        finally:
            client.close()

    async def _searches(self, client: Http) -> None:
        tasks: set[asyncio.Task[None]] = set()
        t0 = time.monotonic()
        i = 0
        while not self._stop.is_set():
            due = t0 + i / self.search_rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if self._stop.is_set():
                break
            q, mode = self.query()
            task = asyncio.create_task(self._search(client, q, mode, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        if tasks:
            await asyncio.gather(*tasks)

    async def _search(self, client: Http, q: str, mode: str, due: float) -> None:
        rec: dict[str, Any] = {"q": q, "mode": mode, "start": time.monotonic(), "due": due}
        path = "/search?" + urllib.parse.urlencode({"q": q, "mode": mode, "limit": 10})
        try:
            status, raw = await asyncio.wait_for(client.get(path), TIMEOUT_S)
            rec["end"] = time.monotonic()
            rec["status"] = status
            if status == 200:
                body = json.loads(raw)
                rec["space"] = body["space"]["name"]
                rec["dims"] = body["space"]["dimensions"]
                rec["degraded"] = body["degraded"]
                rec["n"] = len(body["results"])
                rec["hits"] = [
                    (h["id"], h["semantic"]["score"]) for h in body["results"] if h["semantic"]
                ]
            else:
                rec["error"] = raw[:300].decode(errors="replace")
        except Exception as exc:  # a failed search is data, not a crash
            rec["end"] = time.monotonic()
            rec["status"] = 0
            rec["error"] = f"{type(exc).__name__}: {exc}"[:300]
        self.searches.append(rec)

    async def _inserts(self, client: int, clips: Any, t0: float) -> None:
        """Every ``insert_clients``-th insert of the shared schedule, one per transaction."""
        conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
        async with conn:
            i = client
            while not self._stop.is_set():
                await asyncio.sleep(max(0.0, t0 + i / self.insert_rate - time.monotonic()))
                if self._stop.is_set():
                    break
                c = next(clips)
                tid = f"mig-{i}-{c['twitch_clip_id']}"[:100]
                try:
                    await conn.execute(
                        "INSERT INTO clips (twitch_clip_id, twitch_clip_url, embed_url, title,"
                        " creator_name, creator_id, broadcaster_name, broadcaster_id, game_id,"
                        " game_name, language, thumbnail_url, duration, view_count, created_at)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                        (
                            tid,
                            c["twitch_clip_url"],
                            c["embed_url"],
                            c["title"],
                            c["creator_name"],
                            c["creator_id"],
                            c["broadcaster_name"],
                            c["broadcaster_id"],
                            c["game_id"],
                            c["game_name"],
                            c["language"],
                            c["thumbnail_url"],
                            c["duration"],
                            c["view_count"],
                            c["created_at"],
                        ),
                    )
                    self.inserts.append((time.monotonic(), tid))
                except Exception as exc:
                    self.insert_errors.append(f"{type(exc).__name__}: {exc}"[:300])
                i += self.insert_clients

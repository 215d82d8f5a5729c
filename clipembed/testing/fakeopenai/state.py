"""The fake's state: options, limit windows, faults and statistics (batches: .batches)."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import random
import threading
import time
from typing import Any

from clipembed.testing.fakeopenai.batches import BatchLedger
from clipembed.testing.fakeopenai.protocol import (
    BATCH_ACTIONS,
    BATCH_MODES,
    FAULTS,
    WINDOW,
    Options,
)
from clipembed.testing.fakeopenai.records import _Batch, _File


class _State(BatchLedger):
    def __init__(self, options: Options) -> None:
        self.options = options
        self.lock = threading.Lock()
        self.random = random.Random(options.seed)
        self.stopping = False
        self._encoding: Any = None
        # Files and batches outlive reset(): they are the server's data, not statistics. Lock
        # order: batch_lock, then files_lock or lock (never the other way round). batch_lock
        # is held while lines run, so the event loop takes it only through asyncio.to_thread.
        self.batch_lock = threading.RLock()
        self.files_lock = threading.Lock()  # held briefly: guards `files` alone
        self.files: dict[str, _File] = {}
        self.batches: dict[str, _Batch] = {}
        self.reset()

    @property
    def encoding(self) -> Any:
        if self._encoding is None:
            from clipembed.embedding.providers import tokens

            self._encoding = tokens.TiktokenTokenizer()
        return self._encoding

    async def sleep_unless_stopping(self, seconds: float) -> None:
        """A long sleep that ends early when the server stops (no cancelled-task noise)."""
        deadline = time.monotonic() + seconds
        while not self.stopping and (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(left, 0.05))

    def apply(self, changes: dict[str, Any]) -> None:
        """Change options at run time, then run batch actions; a typo changes nothing.

        Options and actions are checked before anything changes (a batch action that cannot
        run, e.g. on an unknown or finished batch, is a ValueError too).
        """
        fields = {f.name for f in dataclasses.fields(Options)}
        unknown = sorted(set(changes) - fields - BATCH_ACTIONS)
        if unknown:
            raise ValueError(f"unknown option(s): {', '.join(unknown)}")
        actions = {k: v for k, v in changes.items() if k in BATCH_ACTIONS}
        changes = {k: v for k, v in changes.items() if k not in BATCH_ACTIONS}
        if "plan" in changes:
            plan = changes["plan"]
            if not isinstance(plan, list) or not all(str(p) in FAULTS for p in plan):
                raise ValueError(f"plan must be a list of {sorted(FAULTS)}")
            changes = dict(changes, plan=[str(p) for p in plan])
        if "batch_mode" in changes and changes["batch_mode"] not in BATCH_MODES:
            raise ValueError(f"batch_mode must be one of {sorted(BATCH_MODES)}")
        if "batch_fail_lines" in changes:
            ids = changes["batch_fail_lines"]
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise ValueError("batch_fail_lines must be a list of custom_ids")
        with self.batch_lock:
            steps = self._check_actions(actions)
            with self.lock:
                for key, value in changes.items():
                    setattr(self.options, key, value)
                if "seed" in changes:
                    self.random = random.Random(changes["seed"])
            for action, batch, count in steps:
                self._act(action, batch, count)

    # -- statistics -----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """stats() plus the batches' state, taking the locks in order."""
        with self.batch_lock:
            batches = collections.Counter(b.status for b in self.batches.values())
            queued = self.enqueued_tokens()
            with self.lock:
                out = self.stats()
        out["batches_by_status"] = dict(batches)
        out["batch_tokens_in_queue"] = queued
        return out

    def renew(self, options: Options) -> None:
        """As a new server with ``options``: no statistics, limit windows, files or batches.

        Lets one server serve a whole test session (each test renews it) instead of one server
        per test; the tokenizer, slow to load, is kept.
        """
        with self.batch_lock, self.files_lock, self.lock:
            self.options = options
            self.random = random.Random(options.seed)
            self.stopping = False
            self.files.clear()
            self.batches.clear()
            self.reset()

    def reset(self) -> None:
        self.limited_by = "requests"  # which limit the last 429 of admit() was for
        self.window: collections.deque[tuple[float, int]] = collections.deque()
        self.requests = 0
        self.by_status: collections.Counter[int] = collections.Counter()
        self.faults: collections.Counter[str] = collections.Counter()
        self.inputs = 0
        self.tokens = 0
        self.max_inputs = 0
        self.dimensions_seen: set[int] = set()
        self.without_dimensions = 0  # requests that did not send `dimensions`
        self.embedded: collections.Counter[str] = collections.Counter()
        self.request_times: list[float] = []
        self.api_calls: collections.Counter[str] = collections.Counter()  # files/batches routes
        self.files_uploaded = 0
        self.file_bytes_uploaded = 0
        self.batches_created = 0
        self.batches_per_input_file: collections.Counter[str] = collections.Counter()
        self.batch_custom_ids: collections.Counter[str] = collections.Counter()
        self.batch_lines_enqueued = 0
        self.batch_tokens_enqueued = 0
        self.batch_lines_processed = 0
        self.batch_by_status: collections.Counter[int] = collections.Counter()
        self.batch_inputs = 0
        self.batch_tokens = 0
        self.batch_outcomes: collections.Counter[str] = collections.Counter()

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "faults": dict(self.faults),
            "inputs": self.inputs,
            "tokens": self.tokens,
            "max_inputs": self.max_inputs,
            "dimensions_seen": sorted(self.dimensions_seen),
            "requests_without_dimensions": self.without_dimensions,
            "texts_embedded": len(self.embedded),
            "embedded_total": sum(self.embedded.values()),
            "embedded_more_than_once": sum(1 for c in self.embedded.values() if c > 1),
            "embedded_counts": dict(self.embedded),
            "request_times": self.request_times,
            "api_calls": dict(self.api_calls),
            "files_uploaded": self.files_uploaded,
            "file_bytes_uploaded": self.file_bytes_uploaded,
            "batches_created": self.batches_created,
            "batches_per_input_file": dict(self.batches_per_input_file),
            "input_files_batched_more_than_once": sum(
                1 for c in self.batches_per_input_file.values() if c > 1
            ),
            "batch_custom_ids_more_than_once": sum(
                1 for c in self.batch_custom_ids.values() if c > 1
            ),
            "batch_lines_enqueued": self.batch_lines_enqueued,
            "batch_tokens_enqueued": self.batch_tokens_enqueued,
            "batch_lines_processed": self.batch_lines_processed,
            "batch_lines_by_status": {str(k): v for k, v in sorted(self.batch_by_status.items())},
            "batch_inputs": self.batch_inputs,
            "batch_tokens": self.batch_tokens,
            "batch_outcomes": dict(self.batch_outcomes),
        }

    def next_fault(self) -> str:
        o = self.options
        if o.plan:
            return o.plan.pop(0)
        r = self.random.random
        for name, rate in (
            ("500", o.fail_rate_500),
            ("429", o.fail_rate_429),
            ("wrong_dims", o.wrong_dims_rate),
            ("nan", o.nan_rate),
        ):
            if rate and r() < rate:
                return name
        return "ok"

    def admit(self, tokens: int, now: float) -> tuple[bool, dict[str, str]]:
        """Sliding-minute limit check; records the request when admitted."""
        o = self.options
        while self.window and now - self.window[0][0] >= WINDOW:
            self.window.popleft()
        used_requests = len(self.window)
        used_tokens = sum(t for _, t in self.window)
        headers: dict[str, str] = {}
        over = False
        wait = 0.0
        oldest = self.window[0][0] if self.window else now
        if o.rpm is not None:
            over |= used_requests + 1 > o.rpm
            headers["x-ratelimit-limit-requests"] = str(o.rpm)
            headers["x-ratelimit-remaining-requests"] = str(max(0, o.rpm - used_requests - 1))
            headers["x-ratelimit-reset-requests"] = f"{max(0.0, WINDOW - (now - oldest)):.3f}s"
            if used_requests + 1 > o.rpm:
                wait = max(wait, WINDOW - (now - oldest))
        if o.tpm is not None:
            over |= used_tokens + tokens > o.tpm
            headers["x-ratelimit-limit-tokens"] = str(o.tpm)
            headers["x-ratelimit-remaining-tokens"] = str(max(0, o.tpm - used_tokens - tokens))
            headers["x-ratelimit-reset-tokens"] = f"{max(0.0, WINDOW - (now - oldest)):.3f}s"
            if used_tokens + tokens > o.tpm:
                # time until enough tokens have left the window
                freed, t_wait = 0, 0.0
                for ts, t in self.window:
                    freed += t
                    t_wait = WINDOW - (now - ts)
                    if used_tokens - freed + tokens <= o.tpm:
                        break
                wait = max(wait, t_wait)
        if over:
            self.limited_by = (
                "tokens" if o.tpm is not None and used_tokens + tokens > o.tpm else "requests"
            )
            wait = max(wait, 0.001)
            headers["retry-after-ms"] = str(int(wait * 1000) + 1)
            headers["retry-after"] = str(int(wait) + 1)
            return False, headers
        self.window.append((now, tokens))
        return True, headers

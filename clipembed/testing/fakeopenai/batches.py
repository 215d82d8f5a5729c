"""The fake's Files and Batch APIs: the stored files and batches, and how a batch moves
(validation, lines run, expiry, cancellation, the enqueued-token limit)."""

from __future__ import annotations

import collections
import json
import random as random_module
import threading
import time
from typing import Any

from clipembed.testing.fakeopenai.protocol import (
    BATCH_ENDPOINT,
    BATCH_TERMINAL,
    ORGANIZATION,
    Options,
    _error_body,
    _new_id,
    check_embedding_body,
    embedding_payload,
    text_digest,
    vector_for,
)
from clipembed.testing.fakeopenai.records import (
    _Batch,
    _batch_error,
    _File,
    _Line,
)


class BatchLedger:
    """The batch half of the server state (mixed into :class:`~.state._State`, which sets these
    attributes in its constructor and ``reset``)."""

    options: Options
    lock: threading.Lock
    batch_lock: threading.RLock
    files_lock: threading.Lock
    random: random_module.Random
    files: dict[str, _File]
    batches: dict[str, _Batch]
    embedded: collections.Counter[str]
    batch_custom_ids: collections.Counter[str]
    batches_per_input_file: collections.Counter[str]
    batch_by_status: collections.Counter[int]
    batch_outcomes: collections.Counter[str]
    batch_lines_enqueued: int
    batch_lines_processed: int
    batch_tokens_enqueued: int
    batch_inputs: int
    batch_tokens: int

    @property
    def encoding(self) -> Any:
        raise NotImplementedError  # the state's tokenizer (see _State.encoding)

    # -- batches --------------------------------------------------------------------------

    def _check_actions(self, actions: dict[str, Any]) -> list[tuple[str, _Batch, int | None]]:
        steps: list[tuple[str, _Batch, int | None]] = []
        for action, value in actions.items():
            if action == "batch_process":
                if not isinstance(value, dict) or not all(
                    isinstance(n, int) and not isinstance(n, bool) and n >= 0
                    for n in value.values()
                ):
                    raise ValueError("batch_process must map batch ids to a number of lines")
                targets: list[tuple[str, int | None]] = [(str(k), n) for k, n in value.items()]
            elif isinstance(value, str):
                targets = [(value, None)]
            elif isinstance(value, list) and all(isinstance(v, str) for v in value):
                targets = [(v, None) for v in value]
            else:
                raise ValueError(f"{action} takes a batch id or a list of them")
            for batch_id, count in targets:
                batch = self.batches.get(batch_id)
                if batch is None:
                    raise ValueError(f"{action}: no such batch {batch_id!r}")
                if batch.status in BATCH_TERMINAL or batch.status == "cancelling":
                    raise ValueError(f"{action}: batch {batch_id} is {batch.status}")
                steps.append((action, batch, count))
        return steps

    def _act(self, action: str, batch: _Batch, count: int | None) -> None:
        now = int(time.time())
        if batch.status == "validating":
            self._validate(batch, now)
        if batch.status in BATCH_TERMINAL:
            return  # it failed validation: nothing to run
        if action == "batch_process":
            self._run_lines(batch, count)
        elif action == "batch_complete":
            self._run_lines(batch, None)
            batch.times.setdefault("finalizing_at", now)
            self._finish(batch, "completed", now)
        else:  # batch_expire
            self._finish(batch, "expired", now)

    def advance(self, batch: _Batch) -> None:
        """What time and the batch mode do to a batch between two looks (call with batch_lock)."""
        if batch.status in BATCH_TERMINAL:
            return
        now = int(time.time())
        if batch.status == "cancelling":
            self._finish(batch, "cancelled", now)
            return
        if time.time() >= batch.created_at + batch.window_seconds:
            self._finish(batch, "expired", now)
            return
        mode = self.options.batch_mode
        if batch.status == "validating":
            self._validate(batch, now)
            if mode != "instant" or batch.status != "in_progress":
                return
        if batch.status == "in_progress":
            if mode == "manual":
                return
            if mode == "stepwise":
                self._run_lines(batch, self.options.batch_lines_per_poll)
                if batch.next_line >= len(batch.lines):
                    batch.status = "finalizing"
                    batch.times["finalizing_at"] = now
                return
            self._run_lines(batch, None)
            batch.status = "finalizing"
            batch.times["finalizing_at"] = now
        if batch.status == "finalizing":
            self._finish(batch, "completed", now)

    def _validate(self, batch: _Batch, now: int) -> None:
        """validating -> in_progress, or failed with ``errors`` (the file, or the token queue)."""
        o = self.options
        errors: list[dict[str, Any]] = []
        lines: list[_Line] = []
        models: set[str] = set()
        if len(batch.data) > o.batch_max_file_bytes:
            errors.append(
                _batch_error(
                    "file_too_large",
                    f"The input file is {len(batch.data):,} bytes, more than the maximum of "
                    f"{o.batch_max_file_bytes:,} bytes.",
                )
            )
        else:
            errors, lines, models = self._parse_lines(batch.data)
        inputs: list[str] = []
        for line in lines:
            raw = line.body.get("input")
            texts = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
            inputs.extend(t for t in texts if isinstance(t, str))
        if not errors:
            if not lines:
                errors.append(_batch_error("empty_file", "The input file contains no requests."))
            elif len(lines) > o.batch_max_lines:
                errors.append(
                    _batch_error(
                        "too_many_requests",
                        f"The input file contains {len(lines):,} requests, more than the "
                        f"maximum of {o.batch_max_lines:,}.",
                    )
                )
            elif len(models) > 1:
                errors.append(
                    _batch_error(
                        "mismatched_model",
                        "All the requests of a batch must use the same model; this file uses "
                        f"{', '.join(sorted(models))}.",
                        param="body.model",
                    )
                )
            elif len(inputs) > o.batch_max_inputs:
                errors.append(
                    _batch_error(
                        "too_many_inputs",
                        f"An /v1/embeddings batch may have at most {o.batch_max_inputs:,} "
                        f"embedding inputs across its requests; this one has {len(inputs):,}.",
                    )
                )
        model = next(iter(models)) if len(models) == 1 else None
        tokens = sum(self.encoding.count_many(inputs)) if inputs and not errors else 0
        if not errors and o.batch_queue_tokens is not None:
            queued = sum(
                b.tokens
                for b in self.batches.values()
                if b is not batch
                and b.model == model
                and b.status in ("in_progress", "finalizing", "cancelling")
            )
            if queued + tokens > o.batch_queue_tokens:
                errors.append(
                    _batch_error(
                        "token_limit_exceeded",
                        f"Enqueued token limit reached for {model} in organization "
                        f"{ORGANIZATION}. Limit: {o.batch_queue_tokens:,} enqueued tokens. "
                        "Please try again once some in_progress batches have been completed.",
                    )
                )
        batch.model = model
        if errors:
            batch.errors = errors
            batch.status = "failed"
            batch.times["failed_at"] = now
            with self.lock:
                self.batch_outcomes["failed"] += 1
            return
        batch.lines = lines
        batch.tokens = tokens
        batch.status = "in_progress"
        batch.times["in_progress_at"] = now
        with self.lock:
            self.batches_per_input_file[batch.input_file_id] += 1
            for line in lines:
                self.batch_custom_ids[line.custom_id] += 1
            self.batch_lines_enqueued += len(lines)
            self.batch_tokens_enqueued += tokens

    def _parse_lines(self, data: bytes) -> tuple[list[dict[str, Any]], list[_Line], set[str]]:
        errors: list[dict[str, Any]] = []
        lines: list[_Line] = []
        models: set[str] = set()
        seen: set[str] = set()
        raw_lines = data.split(b"\n")
        if raw_lines and not raw_lines[-1].strip():
            raw_lines.pop()  # the file's final newline
        for number, raw in enumerate(raw_lines, start=1):
            try:
                item = json.loads(raw)
            except ValueError:
                item = None
            if not isinstance(item, dict):
                errors.append(
                    _batch_error(
                        "invalid_json_line", "This line is not parseable as valid JSON.", number
                    )
                )
                continue
            custom_id, body = item.get("custom_id"), item.get("body")
            if not isinstance(custom_id, str) or not custom_id:
                errors.append(
                    _batch_error(
                        "missing_required_parameter",
                        "Missing required parameter: 'custom_id'.",
                        number,
                        "custom_id",
                    )
                )
                continue
            if item.get("method") != "POST":
                errors.append(
                    _batch_error("invalid_method", "The method must be 'POST'.", number, "method")
                )
            if item.get("url") != BATCH_ENDPOINT:
                errors.append(
                    _batch_error(
                        "invalid_url",
                        f"The URL provided for this request ({item.get('url')!r}) does not "
                        f"match the batch endpoint {BATCH_ENDPOINT!r}.",
                        number,
                        "url",
                    )
                )
            if not isinstance(body, dict):
                errors.append(
                    _batch_error(
                        "missing_required_parameter",
                        "Missing required parameter: 'body'.",
                        number,
                        "body",
                    )
                )
                continue
            if custom_id in seen:
                errors.append(
                    _batch_error(
                        "duplicate_custom_id",
                        f"The custom_id {custom_id!r} is a duplicate of another request's. "
                        "The custom_id parameter must be unique for each request in a batch.",
                        number,
                        "custom_id",
                    )
                )
            seen.add(custom_id)
            if isinstance(body.get("model"), str):
                models.add(body["model"])
            lines.append(_Line(number, custom_id, body))
        return errors, lines, models

    def _run_lines(self, batch: _Batch, count: int | None) -> None:
        """Run the next ``count`` lines (all if None) through the synchronous endpoint's code."""
        o = self.options
        end = len(batch.lines) if count is None else min(len(batch.lines), batch.next_line + count)
        for line in batch.lines[batch.next_line : end]:
            checked = check_embedding_body(line.body, self.encoding.count_many)
            if isinstance(checked, tuple):
                status, body = checked
            else:
                with self.lock:
                    injected = line.custom_id in o.batch_fail_lines or (
                        o.batch_fail_rate > 0 and self.random.random() < o.batch_fail_rate
                    )
                if injected:
                    status = o.batch_fail_status
                    body = (
                        _error_body(
                            "The server had an error while processing your request.",
                            "server_error",
                        )
                        if status >= 500
                        else _error_body("Invalid request (injected).", "invalid_request_error")
                    )
                else:
                    status = 200
                    vectors = [
                        vector_for(t, checked.dims, self.options.vectors) for t in checked.inputs
                    ]
                    body = embedding_payload(
                        checked.model, vectors, checked.as_base64, checked.tokens
                    )
            record = {
                "id": _new_id("batch_req_"),
                "custom_id": line.custom_id,
                "response": {
                    "status_code": status,
                    "request_id": _new_id("req_"),
                    "body": body,
                },
                "error": None,
            }
            with self.lock:
                self.batch_lines_processed += 1
                self.batch_by_status[status] += 1
                if status == 200 and not isinstance(checked, tuple):
                    self.batch_inputs += len(checked.inputs)
                    self.batch_tokens += checked.tokens
                    for t in checked.inputs:
                        self.embedded[text_digest(t)] += 1
            if status == 200 and not isinstance(checked, tuple):
                batch.outputs.append(record)
                batch.completed += 1
                batch.used_tokens += checked.tokens
            else:
                batch.error_lines.append(record)
                batch.failed += 1
        batch.next_line = end

    def _finish(self, batch: _Batch, status: str, now: int) -> None:
        """completed, expired or cancelled: lines that never ran go to the error file."""
        code, message = {
            "expired": (
                "batch_expired",
                "This request could not be executed before the completion window expired.",
            ),
            "cancelled": (
                "batch_cancelled",
                "This request was not executed: the batch was cancelled.",
            ),
        }.get(status, ("", ""))
        for line in batch.lines[batch.next_line :]:
            batch.error_lines.append(
                {
                    "id": _new_id("batch_req_"),
                    "custom_id": line.custom_id,
                    "response": None,
                    "error": {"code": code, "message": message},
                }
            )
        batch.next_line = len(batch.lines)
        batch.status = status
        batch.times[f"{status}_at"] = now
        if batch.outputs:
            batch.output_file_id = self._store_output(batch, "output", batch.outputs, now)
        if batch.error_lines:
            batch.error_file_id = self._store_output(batch, "error", batch.error_lines, now)
        with self.lock:
            self.batch_outcomes[status] += 1

    def _store_output(
        self, batch: _Batch, kind: str, records: list[dict[str, Any]], now: int
    ) -> str:
        data = b"".join(json.dumps(r).encode() + b"\n" for r in records)
        file = _File(_new_id("file-"), f"{batch.id}_{kind}.jsonl", "batch_output", data, now)
        with self.files_lock:
            self.files[file.id] = file
        return file.id

    def enqueued_tokens(self) -> int:
        return sum(
            b.tokens
            for b in self.batches.values()
            if b.status in ("in_progress", "finalizing", "cancelling")
        )

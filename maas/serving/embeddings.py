"""The embedding runtime: an ONNX graph (pooling and normalisation inside) and the model's own tokenizer.

No torch: ONNX Runtime + ``tokenizers`` + numpy only. A model is loaded once per process per set of file
digests, whichever tenants call it (a platform model serves everyone from one copy). Concurrent requests
are merged by an :class:`~maas.serving.batcher.AdaptiveBatcher`: the rows of every request in a batch are
sorted by length and run in chunks padded only to their own longest row, so a short sentence never pays
for a long one's padding.

Fairness between tenants on a shared model: a request is cut into slices of at most ``CHUNK_ROWS`` rows
(sorted by length first, so each slice pads only to similar rows), a batch holds at most ``CHUNK_ROWS``
rows, and the batcher's queue is fair between tenants. One tenant's 384 inputs are then 12 slices, and
another tenant's one-line request waits for the slice in flight, not for all 12.

Inputs longer than the model's window (``max_tokens``, 256 for all-MiniLM-L6-v2) are **rejected**, not
truncated: a silently truncated text gets an embedding of only its beginning, and the caller could not tell.
The count includes the special tokens the model adds (``[CLS]``/``[SEP]``), i.e. what the model processes
and what usage meters.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from maas.errors import InvalidInput
from maas.registry.catalog import ResolvedModel
from maas.registry.onnx_safety import check_onnx_bytes
from maas.serving.batcher import AdaptiveBatcher
from maas.serving.tokenizer_host import load_tokenizer
from maas.singleflight import SingleFlight
from maas.storage import ArtifactStore

ONNX_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
# Rows per ONNX call within a batch: large enough to amortise the call, small enough that one chunk's
# padding stays local to similar lengths once rows are sorted.
CHUNK_ROWS = 32
TOKENIZE_INLINE_MAX = 32  # more texts than this are tokenised in a thread, off the event loop

# What ONNX Runtime raises when a graph fails on its inputs (each directly an Exception; their text names the
# model's nodes and internals, never said to a caller).
_RUN_ERRORS = (
    ort_errors.Fail,
    ort_errors.InvalidArgument,
    ort_errors.RuntimeException,
    ort_errors.NotImplemented,
    ort_errors.EPFail,
)

Rows = list[list[int]]
Matrix = np.ndarray[Any, np.dtype[np.float32]]


class EmbeddingModel:
    """A loaded embedding model (STYLE habit 1): load once, then tokenize → embed many times."""

    def __init__(self, name: str, onnx_bytes: bytes, tokenizer_json: bytes, signature: dict[str, Any]) -> None:
        started = time.perf_counter()
        self.name = name
        self.dimensions = int(signature["dimensions"])
        self.max_tokens = int(signature["max_tokens"])
        self._output = str(signature.get("onnx_output", "embeddings"))
        self._inputs = list(signature.get("onnx_inputs", ["input_ids", "attention_mask"]))
        # Graphs imported as ONNX may give token embeddings: pooled (and normalised) here, in numpy. Graphs we
        # export ourselves do both inside.
        self._pool = str(signature.get("pooling", "mean")) if signature.get("pool_in_runtime") else None
        self._normalize = bool(signature.get("normalize_in_runtime"))
        # No truncation (see the module docstring), no padding (done per chunk in ``embed``). A large file is
        # loaded and run by a helper process: parsing it here would stall the server (see tokenizer_host).
        self.tokenizer = load_tokenizer(tokenizer_json)
        facts = self.tokenizer.facts
        self.vocab_size = facts.vocab_size
        self.pad_id = facts.pad_id
        self._prefix, self._suffix = facts.prefix, facts.suffix
        try:
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            # Given bytes, ONNX Runtime reads "external data" against the working directory (the admin key lives
            # there): refused at import, and here again for versions imported before that check.
            check_onnx_bytes(onnx_bytes, ONNX_FILE)
            self._session = ort.InferenceSession(onnx_bytes, sess_options=options, providers=["CPUExecutionProvider"])
        except BaseException:
            self.tokenizer.close()  # a helper process, maybe
            raise
        self.load_seconds = time.perf_counter() - started

    @property
    def tokenizes_inline(self) -> bool:
        """Whether a few texts may be tokenized on the event loop (False: the tokenizer is another process)."""
        return self.tokenizer.in_process

    def tokenize(self, texts: list[str]) -> Rows:
        return self.tokenizer.tokenize(texts)

    def frame(self, ids: list[int]) -> list[int]:
        """Token ids given by the caller, wrapped in the model's special tokens like a tokenised text."""
        return [*self._prefix, *ids, *self._suffix]

    def check_ids(self, ids: list[int], index: int) -> None:
        bad = next((token for token in ids if not 0 <= token < self.vocab_size), None)
        if bad is not None:
            detail = f"input[{index}] has token id {bad}; this model's ids are 0 to {self.vocab_size - 1}"
            raise InvalidInput(detail, errors=[{"loc": ["body", "input", index], "msg": detail}])

    def _run(self, rows: Rows) -> Matrix:
        width = max(len(row) for row in rows)
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.zeros_like(ids)
        try:
            (output,) = self._session.run([self._output], feed)
        except _RUN_ERRORS:
            # A graph that passed import fails on texts within its window (one imported before the whole window
            # was probed): the caller's to shorten, never a 500 with the library's text.
            raise InvalidInput(
                f"model '{self.name}' fails on inputs of up to {width} tokens, although it declares a window of "
                f"{self.max_tokens}; shorter inputs may work"
            ) from None
        vectors = np.asarray(output, dtype=np.float32)
        if self._pool == "cls":
            vectors = vectors[:, 0]
        elif self._pool is not None:
            weights = mask[:, :, None].astype(np.float32)
            vectors = (vectors * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        if self._normalize:
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors

    def embed(self, rows: Rows) -> Matrix:
        """One embedding per row of token ids, in order; rows are sorted by length and run in chunks."""
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        result = np.empty((len(rows), self.dimensions), dtype=np.float32)
        for start in range(0, len(order), CHUNK_ROWS):
            chunk = order[start : start + CHUNK_ROWS]
            result[chunk] = self._run([rows[i] for i in chunk])
        return result


def batch_runner(model: EmbeddingModel) -> Callable[[list[Rows]], list[Matrix]]:
    """Merge the rows of every request in a batch into one ``embed`` call and split the result back."""

    def run(items: list[Rows]) -> list[Matrix]:
        if len(items) == 1:
            return [model.embed(items[0])]
        merged = model.embed([row for item in items for row in item])
        bounds = np.cumsum([len(item) for item in items])[:-1]
        return list(np.split(merged, bounds))

    return run


def slices(rows: Rows) -> tuple[list[int], list[Rows]]:
    """The rows sorted by length and cut into slices of ``CHUNK_ROWS``, with the order they were sorted in."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    return order, [[rows[i] for i in order[start : start + CHUNK_ROWS]] for start in range(0, len(rows), CHUNK_ROWS)]


@dataclass
class LoadedEmbedding:
    model: EmbeddingModel
    batcher: AdaptiveBatcher[Rows, Matrix]

    async def embed(self, rows: Rows, *, tenant: str | None = None) -> Matrix:
        """One embedding per row, in order; submitted as slices in ``tenant``'s fair share of the model."""
        if len(rows) <= CHUNK_ROWS:
            return await self.batcher.submit(rows, key=tenant)
        order, parts = slices(rows)
        results = await self.batcher.submit_many(parts, key=tenant)
        vectors = np.empty((len(rows), self.model.dimensions), dtype=np.float32)
        vectors[order] = np.concatenate(results)
        return vectors


def files_key(resolved: ResolvedModel) -> tuple[str, str]:
    try:
        return resolved.files[ONNX_FILE], resolved.files[TOKENIZER_FILE]
    except KeyError:
        raise InvalidInput(
            f"model '{resolved.model_name}' is not an embedding model served by ONNX Runtime "
            f"(it lacks {ONNX_FILE} or {TOKENIZER_FILE})"
        ) from None


class EmbeddingService:
    """Loaded embedding models keyed by their files' digests: one copy per process, shared by all tenants."""

    def __init__(self, store: ArtifactStore, *, max_batch_requests: int = 64, max_wait_s: float = 0.002) -> None:
        self._store = store
        self._max_batch_requests = max_batch_requests
        self._max_wait_s = max_wait_s
        self._loaded: dict[tuple[str, str], LoadedEmbedding] = {}
        self._loads: SingleFlight[LoadedEmbedding] = SingleFlight()

    def loaded_models(self) -> list[EmbeddingModel]:
        return [loaded.model for loaded in self._loaded.values()]

    async def get(self, resolved: ResolvedModel) -> LoadedEmbedding:
        key = files_key(resolved)
        loaded = self._loaded.get(key)
        if loaded is not None:
            return loaded
        return await self._loads.run(key, lambda: self._load(key, resolved))

    async def _load(self, key: tuple[str, str], resolved: ResolvedModel) -> LoadedEmbedding:
        existing = self._loaded.get(key)
        if existing is not None:
            return existing
        onnx_digest, tokenizer_digest = key

        def read() -> EmbeddingModel:
            tokenizer_json = self._store.get(tokenizer_digest)
            return EmbeddingModel(resolved.model_name, self._store.get(onnx_digest), tokenizer_json, resolved.signature)

        model = await asyncio.get_running_loop().run_in_executor(None, read)
        loaded = LoadedEmbedding(
            model=model,
            batcher=AdaptiveBatcher(
                batch_runner(model),
                max_batch_size=self._max_batch_requests,
                max_wait_s=self._max_wait_s,
                cost=len,  # rows
                max_batch_cost=CHUNK_ROWS,
                name=f"embeddings/{resolved.model_name}",
            ),
        )
        self._loaded[key] = loaded
        return loaded

    async def close(self) -> None:
        for loaded in list(self._loaded.values()):
            await loaded.batcher.close()
            loaded.model.tokenizer.close()
        self._loaded.clear()

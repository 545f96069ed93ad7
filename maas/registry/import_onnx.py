"""An embedding model that arrives as ONNX already: inspected with ONNX Runtime, kept as it is (no torch).

The graph must take ``input_ids`` and ``attention_mask`` (``token_type_ids`` too, if it wants: zeros are
fed) and give either sentence embeddings (batch x dim) or token embeddings (batch x tokens x dim), which
the runtime then pools (mean or CLS, from the sentence-transformers metadata) and normalises in numpy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from maas.registry.import_convert import max_sequence_length, sentence_transformer_layout
from maas.registry.import_files import ModelFiles, refused

REQUIRED_INPUTS = ("input_ids", "attention_mask")
OPTIONAL_INPUTS = ("token_type_ids",)


def _session(path: Path, name: str) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors for a malformed graph
        raise refused(f"'{name}' is not an ONNX model ONNX Runtime can load: {exc}", name) from None


def inspect_embedding_onnx(found: ModelFiles, name: str) -> dict[str, Any]:
    """The signature of an ONNX embedding model; refuses a graph whose inputs or output it cannot serve."""
    session = _session(found.files[name], name)
    inputs = [item.name for item in session.get_inputs()]
    missing = [needed for needed in REQUIRED_INPUTS if needed not in inputs]
    unknown = [item for item in inputs if item not in REQUIRED_INPUTS + OPTIONAL_INPUTS]
    if missing or unknown:
        raise refused(
            f"'{name}' takes inputs {inputs}; an embedding graph must take input_ids and attention_mask "
            "(token_type_ids optional) and nothing else",
            name,
        )
    tokenizer = Tokenizer.from_file(str(found.files["tokenizer.json"]))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    ids = np.asarray([tokenizer.encode("hello world").ids], dtype=np.int64)
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    if "token_type_ids" in inputs:
        feed["token_type_ids"] = np.zeros_like(ids)
    outputs = session.get_outputs()
    try:
        probe = [np.asarray(value) for value in session.run(None, feed)]
    except Exception as exc:
        raise refused(f"'{name}' fails on a tokenised sentence: {exc}", name) from None
    pooled = next((i for i, value in enumerate(probe) if value.ndim == 2), None)
    tokens = next((i for i, value in enumerate(probe) if value.ndim == 3), None)
    chosen = pooled if pooled is not None else tokens
    if chosen is None:
        raise refused(f"'{name}' has no output of shape (batch, dim) or (batch, tokens, dim)", name)
    pooling, normalise = sentence_transformer_layout(found.root)
    config = found.json("config.json") if found.has("config.json") else {}
    return {
        "dimensions": int(probe[chosen].shape[-1]),
        "max_tokens": max_sequence_length(found.root, config),
        "pooling": pooling,
        "normalized": normalise,
        "onnx_inputs": inputs,
        "onnx_output": outputs[chosen].name,
        # Token embeddings are pooled by the runtime, in numpy; a vector is (re)normalised there when the
        # layout asks for it (harmless if the graph already did).
        "pool_in_runtime": pooled is None,
        "normalize_in_runtime": normalise,
    }

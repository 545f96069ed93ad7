"""An embedding model that arrives as ONNX: kept as it is (no torch), checked by running it in a child process.

The graph must take ``input_ids`` and ``attention_mask`` (``token_type_ids`` too, if it wants: zeros are
fed) and give either sentence embeddings (batch x dim) or token embeddings (batch x tokens x dim), which
the runtime then pools (mean or CLS, from the sentence-transformers metadata) and normalises in numpy.

A tenant's graph is loaded by ONNX Runtime only in a child process (``child_process``: time and memory
limits, no secrets, its own empty working directory): ``python -m maas.registry.import_onnx <model.onnx>
<tokenizer.json> <name> <max tokens> <out>`` writes the graph's signature, or why it is refused, to
``report.json``. The probe runs the graph as the runtime will: a sentence alone, a row filling the whole
window the configs declare (the served ``max_tokens``, however long: a BERT of 512 positions that declares
4,096 fails here, under the child's limits, not on a caller's 600-token text), a row with the tokenizer's
highest id, then a padded batch of them (its long row cut to 512 tokens: the padding is what it checks), so a
graph that passes import does not fail on the first long text or rare word. The graph exported from
safetensors (``import_convert``) goes through the same probe.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors
from tokenizers import Tokenizer

from maas.errors import InvalidInput
from maas.registry.child_guard import exit_with_parent, forbid_unpickling
from maas.registry.child_process import ChildLimits, run_child
from maas.registry.import_files import ModelFiles, refused
from maas.registry.onnx_safety import check_onnx_bytes

REQUIRED_INPUTS = ("input_ids", "attention_mask")
OPTIONAL_INPUTS = ("token_type_ids",)
REPORT = "report.json"
_PROBE_TEXT = "hello world"
_BATCH_TOKENS = 512  # the longest row of the padded batch probed: attention is quadratic
_CHECK_TIMEOUT_S = 300.0
# ONNX Runtime's errors carry the model's path and internals: the reason is said in our words, by kind.
_REASONS = (
    (ort_errors.InvalidProtobuf, "it is not a valid ONNX file"),
    (ort_errors.InvalidGraph, "its graph is invalid"),
    (ort_errors.NotImplemented, "it uses an operator or type this ONNX Runtime does not implement"),
    (ort_errors.InvalidArgument, "an input's type or shape, or an index, is not what the graph takes"),
    (ort_errors.NoSuchFile, "it refers to a file that is not part of it"),
    (ort_errors.Fail, "a node of the graph fails on these inputs"),
)


def _reason(exc: Exception) -> str:
    return next((words for kind, words in _REASONS if isinstance(exc, kind)), "ONNX Runtime fails on it")


def _session(data: bytes, name: str) -> Any:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # as served
    try:
        return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors for a malformed graph
        raise refused(f"'{name}' is not an ONNX model ONNX Runtime can load: {_reason(exc)}", name) from None


def _batch(rows: list[list[int]], pad_id: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    width = max(len(row) for row in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return ids, mask


def _probe_rows(tokenizer: Tokenizer, max_tokens: int, tokenizer_name: str) -> list[list[int]]:
    """A sentence, a row filling the whole window served and a row holding the highest token id."""
    short = tokenizer.encode(_PROBE_TEXT).ids[:max_tokens]
    if not short:
        raise refused(f"'{tokenizer_name}' turns '{_PROBE_TEXT}' into no tokens", tokenizer_name)
    long = (short * (max_tokens // len(short) + 1))[:max_tokens]
    highest = [tokenizer.get_vocab_size(with_added_tokens=True) - 1, *short][:max_tokens]
    return [short, long, highest]


def _run(session: Any, inputs: list[str], rows: list[list[int]], pad_id: int, failure: str, name: str) -> list[Any]:
    """Every output for ``rows`` padded as the runtime pads them; refused with ``failure`` when the graph fails."""
    ids, mask = _batch(rows, pad_id)
    feed = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in inputs:
        feed["token_type_ids"] = np.zeros_like(ids)
    try:
        return [np.asarray(value) for value in session.run(None, feed)]
    except Exception as exc:
        raise refused(f"'{name}' {failure}: {_reason(exc)}", name) from None


def _embedding_output(outputs: list[Any], rows: int, width: int, name: str) -> int:
    """The index of the output the runtime will serve: sentence embeddings, else token embeddings."""
    shaped = [
        i
        for i, value in enumerate(outputs)
        if value.shape[:1] == (rows,) and (value.ndim == 2 or (value.ndim == 3 and value.shape[1] == width))
    ]
    chosen = next((i for i in shaped if outputs[i].ndim == 2), next(iter(shaped), None))
    if chosen is None:
        raise refused(f"'{name}' has no output of shape (batch, dim) or (batch, tokens, dim) for its inputs", name)
    value = outputs[chosen]
    if not np.issubdtype(value.dtype, np.floating) or value.shape[-1] == 0:
        raise refused(f"'{name}' gives embeddings of type {value.dtype} and width {value.shape[-1]}", name)
    if not np.isfinite(value).all():
        raise refused(f"'{name}' gives embeddings that are not finite numbers (NaN or infinity)", name)
    return chosen


def probe_embedding_graph(data: bytes, tokenizer_path: Path, *, file: str, max_tokens: int) -> dict[str, Any]:
    """Load and run the graph in ``data`` as the embedding runtime will; its signature, or InvalidInput.

    Runs ONNX Runtime in this process: call it in a child process (``inspect_embedding_onnx`` does).
    """
    check_onnx_bytes(data, file)
    session = _session(data, file)
    inputs = [item.name for item in session.get_inputs()]
    missing = [needed for needed in REQUIRED_INPUTS if needed not in inputs]
    unknown = [item for item in inputs if item not in REQUIRED_INPUTS + OPTIONAL_INPUTS]
    if missing or unknown:
        raise refused(
            f"'{file}' takes inputs {[name[:60] for name in inputs[:8]]}; an embedding graph must take input_ids "
            "and attention_mask (token_type_ids optional) and nothing else",
            file,
        )
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    pad_id = int((tokenizer.padding or {}).get("pad_id", 0))  # what the runtime pads with
    tokenizer.no_padding()
    tokenizer.no_truncation()
    short, long, highest = _probe_rows(tokenizer, max_tokens, tokenizer_path.name)
    alone = _run(session, inputs, [short], pad_id, "fails on one tokenised sentence", file)
    chosen = _embedding_output(alone, 1, len(short), file)
    window = f"fails on a text of {len(long)} tokens, within the window of {max_tokens} tokens its configs declare"
    _run(session, inputs, [long], pad_id, window, file)
    vocabulary = f"fails on token id {highest[0]}, the highest tokenizer.json gives (do their vocabularies match?)"
    _run(session, inputs, [highest], pad_id, vocabulary, file)
    rows = [short, long[:_BATCH_TOKENS], highest]
    batch = _run(session, inputs, rows, pad_id, f"fails on a batch of texts padded with token id {pad_id}", file)
    if len(batch) != len(alone) or _embedding_output(batch, len(rows), max(map(len, rows)), file) != chosen:
        raise refused(f"'{file}' gives outputs of other shapes for a batch than for one sentence", file)
    if batch[chosen].shape[-1] != alone[chosen].shape[-1]:
        raise refused(f"'{file}' gives embeddings of another width for a batch than for one sentence", file)
    return {
        "dimensions": int(alone[chosen].shape[-1]),
        "onnx_inputs": inputs,
        "onnx_output": session.get_outputs()[chosen].name,
        # Token embeddings are pooled by the runtime, in numpy.
        "pool_in_runtime": alone[chosen].ndim == 3,
    }


def inspect_embedding_onnx(found: ModelFiles, name: str, out: Path, *, max_tokens: int) -> dict[str, Any]:
    """The graph's signature, from a child process that loads and runs it; InvalidInput naming the file if not."""
    path = found.files[name].absolute()  # the child runs in its own folder: a relative path would name nothing
    return run_child(
        __name__,
        [str(path), str(found.files["tokenizer.json"].absolute()), name, str(max_tokens)],
        out,
        limits=ChildLimits.for_model(path.stat().st_size, timeout_s=_CHECK_TIMEOUT_S),
        what=f"loading '{name}' with ONNX Runtime",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check an ONNX embedding graph (run by the importer)")
    parser.add_argument("onnx", type=Path)
    parser.add_argument("tokenizer", type=Path)
    parser.add_argument("name")
    parser.add_argument("max_tokens", type=int)
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    exit_with_parent()
    forbid_unpickling(without_torch=True)  # ONNX Runtime and tokenizers only: torch need not even load here
    report: dict[str, Any]
    try:
        report = probe_embedding_graph(
            args.onnx.read_bytes(), args.tokenizer, file=args.name, max_tokens=args.max_tokens
        )
    except InvalidInput as exc:
        report = {"error": exc.detail}
    except MemoryError:
        report = {"error": f"loading and running '{args.name}' needs more memory than an import may use"}
    except Exception as exc:  # the model's fault, whatever it is: said without the library's text (paths)
        report = {"error": f"'{args.name}' could not be loaded and run ({type(exc).__name__})"}
    (args.out / REPORT).write_text(json.dumps(report), encoding="utf-8")
    return 0 if "error" not in report else 2


if __name__ == "__main__":
    sys.exit(main())

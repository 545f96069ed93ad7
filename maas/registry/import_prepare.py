"""The per-family step of an import: convert (embedding) or check (causal LM) the scanned files in a child.

Each returns ``(files, main file, signature, metrics)`` for :func:`maas.registry.importer.prepare`. Every load
of a tenant's weights runs in a child process under limits (``child_process.run_child``); the files a child
sees are staged: only the files the scan kept, never what it skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from maas.errors import InvalidInput
from maas.registry.causal_lm_files import check_causal_lm_files, check_config, check_folder_shard_index
from maas.registry.child_process import ChildLimits, run_child
from maas.registry.import_convert import ONNX_NAME, max_sequence_length, sentence_transformer_layout
from maas.registry.import_files import ModelFiles, refused, scan_directory
from maas.registry.import_onnx import inspect_embedding_onnx
from maas.registry.safetensors_check import ModelFileError

# Files an embedding model is served from (ONNX Runtime + tokenizers) and keeps for reference.
_EMBEDDING_KEEP = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
)
_CONVERT_TIMEOUT_S = 1800.0
_CHECK_TIMEOUT_S = 600.0
# The child that loads and runs a causal LM before it is registered. Named, never imported: it runs serving's
# loader (so a model that imports is a model serving loads), a layer above the registry.
_LOAD_CHECK = "maas.serving.generation.load_check"
# A GGUF file keeps 2-8 bits a weight; dequantised to float32 it is up to about 8 times its size (Q4: 7x).
_GGUF_TO_FLOAT32 = 8
_WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".onnx")


def _run_conversion(args: list[str], out: Path, *, model_bytes: int | None = None) -> dict[str, Any]:
    """``import_convert`` in a child process under the import's limits (``child_process``): its report.

    ``args`` are the conversion's (kind, source folder, options); the memory limit is sized from
    ``model_bytes``, by default the size of the weights in the source folder. A shard map in the folder is
    checked first, whatever the family: transformers opens each shard it names, and one not ending in
    .safetensors with torch.load."""
    source = Path(args[1]).resolve()  # the child runs in its own folder: a relative path would name nothing
    try:
        check_folder_shard_index(source)
    except ModelFileError as exc:
        raise refused(str(exc), exc.file) from None
    if model_bytes is None:
        model_bytes = sum(p.stat().st_size for p in source.rglob("*") if p.suffix in _WEIGHT_SUFFIXES and p.is_file())
    limits = ChildLimits.for_model(model_bytes, timeout_s=_CONVERT_TIMEOUT_S)
    arguments = [args[0], str(source), *args[2:]]
    return run_child("maas.registry.import_convert", arguments, out, limits=limits, what="converting the model")


def prepare_embedding(found: ModelFiles, work: Path) -> tuple[dict[str, Path], str, dict[str, Any], dict[str, Any]]:
    if not found.has("tokenizer.json"):
        raise refused(
            "an embedding model needs tokenizer.json (it is served with the tokenizers library)", "tokenizer.json"
        )
    # Read here, before any child process starts: every path and value the layout names is checked.
    pooling, normalise = sentence_transformer_layout(found.root)
    max_tokens = max_sequence_length(found.root, found.json("config.json") if found.has("config.json") else {})
    onnx_files = found.with_suffix(".onnx")
    if not found.with_suffix(".safetensors") and onnx_files:
        # Already ONNX: kept as it is, loaded and run in a child process (no conversion, no torch).
        chosen = ONNX_NAME if ONNX_NAME in onnx_files else onnx_files[0]
        graph = inspect_embedding_onnx(found, chosen, work / "onnx-check", max_tokens=max_tokens)
        signature = {
            "dimensions": graph["dimensions"],
            "max_tokens": max_tokens,
            "pooling": pooling,
            "normalized": normalise,
            "onnx_inputs": graph["onnx_inputs"],
            "onnx_output": graph["onnx_output"],
            # Token embeddings are pooled by the runtime, in numpy; a vector is (re)normalised there when the
            # layout asks for it (harmless if the graph already did).
            "pool_in_runtime": graph["pool_in_runtime"],
            "normalize_in_runtime": normalise,
        }
        files = {name: found.files[name] for name in _EMBEDDING_KEEP if found.has(name)}
        files[ONNX_NAME] = found.files[chosen]
        return files, ONNX_NAME, signature, {}
    if not found.with_suffix(".safetensors"):
        raise refused("an embedding model needs its weights as model.safetensors or model.onnx", "model.safetensors")
    if not found.has("config.json"):
        raise refused("an embedding model in safetensors needs its config.json (the architecture)", "config.json")
    try:  # transformers reads it in the conversion: the rules a causal LM's config follows (no other weights)
        check_config(found.json("config.json"))
    except ModelFileError as exc:
        raise refused(str(exc), exc.file) from None
    # The conversion sees the kept files only: a skipped one (a shard map under another name) is still on disk
    # in the source folder, and transformers opens what such a file names. The layout read above is passed on:
    # a Pooling config in a folder of another name is not a kept file.
    source = _staged(found.files, work / "embedding-model")
    layout = ["--pooling", pooling, *(["--normalise"] if normalise else [])]
    out = work / "converted"
    report = _run_conversion(["embedding", str(source), *layout], out)
    files = {name: found.files[name] for name in _EMBEDDING_KEEP if found.has(name)}
    files[ONNX_NAME] = out / ONNX_NAME
    signature = {
        "dimensions": report["dimensions"],
        "max_tokens": report["max_tokens"],
        "pooling": report["pooling"],
        "normalized": report["normalized"],
        "onnx_inputs": ["input_ids", "attention_mask"],
        "onnx_output": "embeddings",
    }
    metrics = {"convert_seconds": report["convert_seconds"], "export_max_abs_diff": report["export_max_abs_diff"]}
    return files, ONNX_NAME, signature, metrics


def _staged(files: dict[str, Path], folder: Path) -> Path:
    """A folder of links to exactly the kept files: a loader there sees what serving will see, and nothing else
    of the source folder (a README, an adapter_config.json naming another model)."""
    for name, path in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).symlink_to(path.resolve())
    return folder.resolve()


def _checked_causal_lm(found: ModelFiles, work: Path, step: str) -> tuple[str, dict[str, Any]]:
    """(main weights file, the load check's report) of a causal LM's files: the rules every loader of them
    relies on checked here (``causal_lm_files``), then the model loaded and run once in a child process."""
    try:  # every header was checked by the scan; the load check's child checks them again before loading
        checked = check_causal_lm_files(found.files, headers=False)
    except ModelFileError as exc:
        raise refused(str(exc), exc.file) from None
    folder = _staged(found.files, work / f"{step}-model")
    limits = ChildLimits.for_model(checked.weights_bytes, timeout_s=_CHECK_TIMEOUT_S)
    report = run_child(_LOAD_CHECK, [str(folder)], work / f"{step}-check", limits=limits, what="loading the model")
    return checked.weights[0], report


def _lm_signature(report: dict[str, Any]) -> dict[str, Any]:
    keys = ("context_length", "vocab_size", "eos_token_ids", "has_chat_template", "architecture")
    return {key: report[key] for key in keys}


def prepare_causal_lm(
    found: ModelFiles, work: Path, gguf_file: str | None
) -> tuple[dict[str, Path], str, dict[str, Any], dict[str, Any]]:
    ggufs = found.with_suffix(".gguf")
    if ggufs:
        chosen = gguf_file or (ggufs[0] if len(ggufs) == 1 else "")
        if chosen not in ggufs:
            raise InvalidInput(f"choose one GGUF file with gguf_file: the model has {', '.join(ggufs)}")
        if "/" in chosen:
            raise InvalidInput("the GGUF file must sit at the top of the model's folder")
        # The GGUF file alone: it holds the config, tokenizer and chat template, and only what the conversion
        # writes is kept, so no other file of the archive has anything to say to the loader.
        source = _staged({chosen: found.files[chosen]}, work / "gguf-model")
        size = found.files[chosen].stat().st_size
        report = _run_conversion(
            ["gguf", str(source), "--gguf-file", chosen], work / "converted", model_bytes=_GGUF_TO_FLOAT32 * size
        )
        # What the conversion wrote is checked as an upload would be, then loaded and run like one.
        converted = scan_directory(work / "converted")
        main, checked = _checked_causal_lm(converted, work, "converted")
        signature = {**_lm_signature(checked), "source_format": "gguf", "gguf_file": chosen}
        metrics = {
            "parameters": checked["parameters"],
            "dequantise_seconds": report["dequantise_seconds"],
            "convert_seconds": report["convert_seconds"],
            "check_seconds": checked["check_seconds"],
        }
        return dict(converted.files), main, signature, metrics
    if not found.has("tokenizer.json"):
        raise refused("a causal LM needs tokenizer.json (usage is counted with the model's own tokenizer)")
    main, checked = _checked_causal_lm(found, work, "source")
    signature = {**_lm_signature(checked), "source_format": "safetensors"}
    metrics = {"parameters": checked["parameters"], "check_seconds": checked["check_seconds"]}
    return dict(found.files), main, signature, metrics

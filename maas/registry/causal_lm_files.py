"""What an imported causal LM's files may say: the rules the importer and the serving loader both apply.

A causal LM is loaded by transformers from a folder. What it reads there is decided by the files themselves,
so each is checked before any loader sees it:

- the weights are ``model.safetensors``, or the shards that ``model.safetensors.index.json`` names. Every
  shard must be a plain relative name of a ``.safetensors`` file of the model: transformers joins the name to
  the folder and opens anything else with ``torch.load``, an unpickler, and a name like ``../../x`` leaves
  the folder. Every weights file's header is checked in full (``safetensors_check``);
- ``config.json``: sizes are positive integers and token ids integers (``num_attention_heads: 0`` divides by
  zero at load, a non-integer ``eos_token_id`` failed every request), no ``quantization_config`` (another
  loader), no ``transformers_weights`` naming another file, no ``auto_map`` (the model's own code) and no
  attention kernel from the Hub (code too);
- ``generation_config.json``: token ids are integers;
- ``tokenizer_config.json``: no key naming a file (``gguf_file``, ``vocab_file``, any ``*_file``/``*_files``,
  ``vocab``/``merges`` as paths): transformers opens what they name, anywhere on the server; only
  ``fast_tokenizer_files``, each a plain name of the model's files. ``tokenizer_class`` is one that builds
  from tokenizer.json alone (``TOKENIZER_CLASSES``).

Failures are ModelFileError naming the file by its name inside the model, never a server path.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maas.registry.safetensors_check import ModelFileError, check_safetensors

CONFIG = "config.json"
GENERATION_CONFIG = "generation_config.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
# Sizes a config may give (under any of the names architectures use); each a positive integer when set.
SIZE_KEYS = (
    "vocab_size",
    "hidden_size",
    "n_embd",
    "d_model",
    "num_attention_heads",
    "n_head",
    "num_key_value_heads",
    "num_hidden_layers",
    "n_layer",
    "intermediate_size",
    "n_inner",
    "head_dim",
    "max_position_embeddings",
    "n_positions",
    "n_ctx",
)
TOKEN_ID_KEYS = ("eos_token_id", "bos_token_id", "pad_token_id", "decoder_start_token_id")
# transformers reads these from config.json; a value like "org/repo" asks it to download and run a kernel.
_IMPLEMENTATION_KEYS = (
    "attn_implementation",
    "_attn_implementation",
    "experts_implementation",
    "_experts_implementation",
)
# Tokenizer classes that, given tokenizer.json, build from it alone (transformers 5: TokenizersBackend loads the
# file; GPT2Tokenizer, LlamaTokenizer and Qwen2Tokenizer build a BPE model from the vocabulary and merges read
# out of it and open nothing else).
# Names resolve to these classes with and without the "Fast" suffix.
TOKENIZER_CLASSES = frozenset(
    {
        "PreTrainedTokenizerFast",
        "TokenizersBackend",
        "GPT2Tokenizer",
        "GPT2TokenizerFast",
        "LlamaTokenizer",
        "LlamaTokenizerFast",
        "Qwen2Tokenizer",
        "Qwen2TokenizerFast",
    }
)
# tokenizer_config.json keys the tokenizer's constructor gets and may read as a file's path (a vocabulary or
# merges given as a string is read from that path); any key ending in _file or _files is refused as well.
_TOKENIZER_PATH_KEYS = ("vocab", "merges")
_FAST_TOKENIZER_FILES = "fast_tokenizer_files"
_LARGEST = 2**31 - 1  # past it torch's C++ side overflows
_MAX_JSON_BYTES = 64 * 1024 * 1024
_SHOWN = 120


@dataclass(frozen=True)
class CausalLMFiles:
    config: dict[str, Any]
    weights: list[str]  # the safetensors files the loader reads, by name inside the model
    weights_bytes: int


def _shown(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


def read_json(path: Path, file: str) -> Any:
    if path.stat().st_size > _MAX_JSON_BYTES:
        raise ModelFileError(f"'{file}' is larger than {_MAX_JSON_BYTES >> 20} MB; is it really a config?", file=file)
    try:
        return json.loads(path.read_bytes())
    except (UnicodeDecodeError, RecursionError, ValueError):
        raise ModelFileError(f"'{file}' is not valid JSON", file=file) from None


def _object(files: Mapping[str, Path], file: str) -> dict[str, Any]:
    value = read_json(files[file], file)
    if not isinstance(value, dict):
        raise ModelFileError(f"'{file}' must hold a JSON object", file=file)
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_token_ids(values: dict[str, Any], file: str) -> None:
    for key in TOKEN_ID_KEYS:
        value = values.get(key)
        if value is None or _is_int(value):
            continue
        if isinstance(value, list) and all(_is_int(item) for item in value):
            continue
        raise ModelFileError(
            f"'{file}' sets '{key}' to {_shown(value)}: a token id is an integer (or a list of integers)", file=file
        )


def check_config(config: dict[str, Any]) -> None:
    """config.json's values that would make the model fail to load or fail every request."""
    for key in ("auto_map", "quantization_config"):
        if key in config:
            why = (
                "the model needs its own Python code to load, which is never run here"
                if key == "auto_map"
                else "quantised checkpoints need another loader; import float weights or a GGUF file"
            )
            raise ModelFileError(f"'{CONFIG}' sets '{key}': {why}", file=CONFIG)
    for key in _IMPLEMENTATION_KEYS:
        value = config.get(key)
        if value is not None and not (isinstance(value, str) and value.isidentifier()):
            raise ModelFileError(
                f"'{CONFIG}' sets '{key}' to {_shown(value)}: only a built-in implementation (eager, sdpa) may be "
                "named; a kernel fetched from the Hub is code",
                file=CONFIG,
            )
    explicit = config.get("transformers_weights")
    if explicit is not None and explicit not in (WEIGHTS, INDEX):
        raise ModelFileError(
            f"'{CONFIG}' sets 'transformers_weights' to {_shown(explicit)}: the weights must be {WEIGHTS} or {INDEX}",
            file=CONFIG,
        )
    architectures = config.get("architectures")
    if architectures is not None and not (
        isinstance(architectures, list) and all(isinstance(item, str) for item in architectures)
    ):
        raise ModelFileError(
            f"'{CONFIG}' sets 'architectures' to something other than a list of class names", file=CONFIG
        )
    if not isinstance(config.get("model_type", ""), str):
        raise ModelFileError(f"'{CONFIG}' sets 'model_type' to something other than a name", file=CONFIG)
    for key in SIZE_KEYS:
        value = config.get(key)
        if value is None:
            continue
        if not _is_int(value) or value <= 0:
            raise ModelFileError(
                f"'{CONFIG}' sets '{key}' to {_shown(value)}: it must be a positive integer", file=CONFIG
            )
        if value > _LARGEST:
            raise ModelFileError(f"'{CONFIG}' sets '{key}' to {value}: it is larger than any model's", file=CONFIG)
    _check_token_ids(config, CONFIG)


def check_tokenizer_config(config: dict[str, Any], files: Mapping[str, Path]) -> None:
    """tokenizer_config.json's keys are passed to the tokenizer's constructor: none may name a file (a null
    one, as older configs save ``special_tokens_map_file``, names nothing)."""
    tokenizer_class = config.get("tokenizer_class")
    if tokenizer_class is not None and tokenizer_class not in TOKENIZER_CLASSES:
        raise ModelFileError(
            f"'{TOKENIZER_CONFIG}' sets 'tokenizer_class' to {_shown(tokenizer_class)}: supported are "
            f"{', '.join(sorted(TOKENIZER_CLASSES))} (or none), which load from tokenizer.json alone",
            file=TOKENIZER_CONFIG,
        )
    for key, value in config.items():
        names_file = key.endswith(("_file", "_files")) or key in _TOKENIZER_PATH_KEYS
        if names_file and key != _FAST_TOKENIZER_FILES and value is not None:
            raise ModelFileError(
                f"'{TOKENIZER_CONFIG}' sets '{_shown(key)}': a tokenizer configuration may not name files "
                "(the tokenizer is read from the model's tokenizer.json)",
                file=TOKENIZER_CONFIG,
            )
    named = config.get(_FAST_TOKENIZER_FILES)
    entries = [] if named is None else named if isinstance(named, list) else [named]
    for name in entries:
        problem = plain_name_problem(name, files) if isinstance(name, str) else "it is not a file name"
        if problem is not None:
            raise ModelFileError(
                f"'{TOKENIZER_CONFIG}' names {_shown(name)} in '{_FAST_TOKENIZER_FILES}': {problem}",
                file=TOKENIZER_CONFIG,
            )


def plain_name_problem(name: str, files: Mapping[str, Path]) -> str | None:
    """Why ``name`` is not a plain relative name of one of the model's files, or None."""
    parts = name.split("/")
    if name.startswith("/") or "\\" in name or "\x00" in name or any(part in ("", ".", "..") for part in parts):
        return "it must be a plain file name inside the model's folder"
    if name not in files:
        return "the model has no such file"
    return None


def check_shard_index(index: Any, files: Mapping[str, Path]) -> list[str]:
    """The shards model.safetensors.index.json names: each a .safetensors file of the model, by a plain name."""
    if not isinstance(index, dict):
        raise ModelFileError(f"'{INDEX}' must hold a JSON object", file=INDEX)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ModelFileError(f"'{INDEX}' needs a 'weight_map' object naming each tensor's shard", file=INDEX)
    if not isinstance(index.get("metadata"), dict):
        raise ModelFileError(f"'{INDEX}' needs a 'metadata' object (it may be empty)", file=INDEX)
    shards: set[str] = set()
    for tensor, shard in weight_map.items():
        if not isinstance(shard, str):
            raise ModelFileError(
                f"'{INDEX}' names {_shown(shard)} as the shard of tensor '{_shown(tensor)}': not a file name",
                file=INDEX,
            )
        if shard in shards:
            continue
        problem = plain_name_problem(shard, files)
        if problem is None and not shard.endswith(".safetensors"):
            problem = "a shard must be a .safetensors file (no other weights format is ever loaded)"
        if problem is not None:
            raise ModelFileError(
                f"'{INDEX}' names the shard '{_shown(shard)}' (for tensor '{_shown(tensor)}'): {problem}", file=INDEX
            )
        shards.add(shard)
    return sorted(shards)


def check_folder_shard_index(folder: Path) -> None:
    """The shard map in ``folder``, if there is one, checked against the folder's files (any family's)."""
    if (folder / INDEX).is_file():
        check_shard_index(read_json(folder / INDEX, INDEX), folder_files(folder))


def check_causal_lm_files(files: Mapping[str, Path], *, headers: bool = True) -> CausalLMFiles:
    """Check a causal LM's files (name inside the model -> path) before any loader reads them.

    ``headers=False`` sizes the weights from the file system without parsing their headers (up to 100 MB
    each): for the API process, whose import scan checked every header already, the large ones in a child,
    and whose load check child checks them again with this function."""
    if CONFIG not in files:
        raise ModelFileError(f"a causal LM needs its {CONFIG} (the architecture)", file=CONFIG)
    config = _object(files, CONFIG)
    check_config(config)
    if GENERATION_CONFIG in files:
        _check_token_ids(_object(files, GENERATION_CONFIG), GENERATION_CONFIG)
    if TOKENIZER_CONFIG in files:
        check_tokenizer_config(_object(files, TOKENIZER_CONFIG), files)
    shards = check_shard_index(read_json(files[INDEX], INDEX), files) if INDEX in files else []
    if WEIGHTS in files:
        weights = [WEIGHTS]
    elif shards:
        weights = shards
    else:
        raise ModelFileError(
            f"a causal LM's weights must be {WEIGHTS}, or the shards {INDEX} names (safetensors only)", file=WEIGHTS
        )
    for name in weights if headers else ():
        check_safetensors(files[name], name)
    return CausalLMFiles(config=config, weights=weights, weights_bytes=sum(files[n].stat().st_size for n in weights))


def folder_files(directory: Path) -> dict[str, Path]:
    """Every regular file under ``directory`` by its relative name; links to folders are not followed."""
    found: dict[str, Path] = {}
    for folder, dirs, names in os.walk(directory, followlinks=False):
        dirs.sort()
        for name in names:
            path = Path(folder) / name
            if path.is_file():
                found[path.relative_to(directory).as_posix()] = path
    return found

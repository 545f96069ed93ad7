"""A tiny random Llama saved as a tenant would upload it (safetensors, tokenizer.json, a chat template), and
ways to break its files: what the causal-lm import and loader tests start from."""

from __future__ import annotations

import io
import json
import shutil
import struct
import zipfile
from pathlib import Path
from typing import Any

TEXT = "The quick brown fox jumps over the lazy dog. Hello, world! A man is eating food. " * 20
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def tiny_llama(folder: Path) -> Path:
    """A 2-layer Llama with a 300-token byte-level BPE vocabulary, written to ``folder``."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([TEXT], vocab_size=300, min_frequency=2, special_tokens=["<|endoftext|>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )
    folder.mkdir(parents=True, exist_ok=True)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def copy_with(source: Path, target: Path, changes: dict[str, Any] | None = None) -> Path:
    """A copy of the model in ``source``; ``changes`` maps a file name to new bytes, to a dict merged into its
    JSON, or to None (the file removed)."""
    shutil.copytree(source, target)
    for name, change in (changes or {}).items():
        path = target / name
        if change is None:
            path.unlink()
        elif isinstance(change, bytes):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(change)
        else:
            path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    return target


def sharded(source: Path, target: Path, weight_map: dict[str, Any]) -> Path:
    """The model with its weights under another name and a model.safetensors.index.json mapping every tensor
    as ``weight_map`` says ("*" stands for each tensor not named)."""
    copy_with(source, target)
    (target / "model.safetensors").rename(target / "model-00001-of-00001.safetensors")
    header = safetensors_header(target / "model-00001-of-00001.safetensors")
    default = weight_map.get("*", "model-00001-of-00001.safetensors")
    mapping = {name: weight_map.get(name, default) for name in header if name != "__metadata__"}
    index = {"metadata": {"total_size": 0}, "weight_map": mapping}
    (target / "model.safetensors.index.json").write_text(json.dumps(index))
    return target


def safetensors_header(path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header: dict[str, Any] = json.loads(data[8 : 8 + length])
    return header


def with_header(path: Path, change: dict[str, Any]) -> None:
    """Rewrite the safetensors file's header with ``change`` merged into it; the data stays as it was."""
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = {**json.loads(data[8 : 8 + length]), **change}
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + length :])


def zipped(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, f"model/{path.relative_to(folder).as_posix()}")
    return buffer.getvalue()

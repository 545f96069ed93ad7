"""One-time conversions at import, run in a child process: ``python -m maas.registry.import_convert``.

They need torch and transformers, which the API process never imports (serving embeddings needs only
ONNX Runtime + tokenizers), so the importer runs this module as a subprocess and reads back the files it
wrote plus ``report.json`` (what the signature needs: dimensions, context length, ...).

- ``embedding``: a sentence-transformers style encoder becomes ``model.onnx`` whose graph does the pooling
  (mean or CLS) and the L2 normalisation, inputs ``input_ids`` and ``attention_mask`` (int64), output
  ``embeddings`` (float32, batch x dim). The export is checked against the torch model before it is kept.
- ``gguf``: a GGUF causal LM is dequantised once (to float32) and saved as a Hugging Face directory, so a
  later load takes a fraction of a second instead of the dequantisation's 15-50 s. The chat template goes
  into ``tokenizer_config.json``.

Nothing here trusts remote code: ``trust_remote_code=False``, ``local_files_only=True``, safetensors only.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from maas.errors import InvalidInput
from maas.registry.child_guard import exit_with_parent, forbid_unpickling
from maas.registry.import_files import MAX_CONFIG_BYTES, read_json, refused
from maas.registry.import_onnx import probe_embedding_graph

REPORT = "report.json"
ONNX_NAME = "model.onnx"
_ST_MODULES = {"Transformer", "Pooling", "Normalize"}
_MAX_MODULES = 32
_DRIVE = re.compile(r"^[A-Za-z]:")
# The longest window an embedding model may declare: attention over it is quadratic, in the API process.
MAX_TOKENS = 32_768
_CHECK_SENTENCES = ["A man is eating food.", "The quick brown fox jumps over the lazy dog, twice."]


class ConversionError(Exception):
    """The model cannot be converted; the message says why (it becomes the import's 4xx detail)."""


def _read_json(path: Path) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return value


def _module_folder(src: Path, folder: str) -> Path:
    """``src / folder`` for a folder modules.json names; refused unless it is a relative path that stays inside."""
    root = src.resolve()
    outside = folder.startswith(("/", "\\")) or bool(_DRIVE.match(folder)) or "\x00" in folder
    outside = outside or ".." in re.split(r"[\\/]", folder)
    path = root if outside else (root / folder).resolve()
    if outside or (path != root and root not in path.parents):
        raise refused(
            f"'modules.json' names the path '{folder[:120]}', which is not a folder inside the model; "
            "module paths must be relative folders of the model's own files",
            "modules.json",
        )
    return path


def _modules(src: Path) -> list[tuple[str, str]]:
    """(kind, folder) of each module modules.json lists, its shape checked."""
    modules = read_json(src / "modules.json", "modules.json")
    shape = "'modules.json' must be a list of modules, each an object with a string 'type' and 'path'"
    if not isinstance(modules, list) or len(modules) > _MAX_MODULES:
        raise refused(shape, "modules.json")
    listed: list[tuple[str, str]] = []
    for module in modules:
        if not (
            isinstance(module, dict) and isinstance(module.get("type"), str) and isinstance(module.get("path"), str)
        ):
            raise refused(shape, "modules.json")
        listed.append((module["type"].rsplit(".", 1)[-1], module["path"]))
    return listed


def sentence_transformer_layout(src: Path) -> tuple[str, bool]:
    """(pooling, normalise) from modules.json + the pooling config; mean + normalise when there is none.

    Raises InvalidInput naming the file: every path modules.json names must be a folder inside ``src``.
    """
    if not (src / "modules.json").is_file():
        return "mean", True
    pooling, normalise = "mean", False
    for kind, folder in _modules(src):
        if kind not in _ST_MODULES:
            raise refused(
                f"'modules.json' names a '{kind[:120]}' module; only Transformer, Pooling and Normalize are supported",
                "modules.json",
            )
        path = _module_folder(src, folder)
        if kind == "Normalize":
            normalise = True
        if kind == "Pooling":
            name = "/".join(part for part in (*re.split(r"[\\/]", folder), "config.json") if part not in ("", "."))
            present = (path / "config.json").is_file()
            if present and (path / "config.json").stat().st_size > MAX_CONFIG_BYTES:  # read in the API process
                raise refused(f"'{name}' is larger than {MAX_CONFIG_BYTES >> 20} MB; is it really a config?", name)
            config = read_json(path / "config.json", name) if present else {}
            if not isinstance(config, dict):
                raise refused(f"'{name}' must hold a JSON object", name)
            if config.get("pooling_mode_cls_token"):
                pooling = "cls"
            elif config.get("pooling_mode_mean_tokens", True):
                pooling = "mean"
            else:
                raise refused("the Pooling module uses a mode other than mean or CLS; it is not supported", name)
    return pooling, normalise


def _window(value: object, name: str, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_TOKENS:
        raise refused(
            f"'{name}' sets {key} to {str(value)[:40]}; the window an embedding model serves must be an integer "
            f"from 1 to {MAX_TOKENS:,} tokens (set max_seq_length in sentence_bert_config.json to serve less)",
            name,
        )
    return value


def max_sequence_length(src: Path, config: dict[str, Any]) -> int:
    """The window served: sentence_bert_config.json's max_seq_length, else config.json's position embeddings.

    Raises InvalidInput naming the file when the value is not a sensible integer (every call would fail).
    """
    st_path = src / "sentence_bert_config.json"
    st_config = read_json(st_path, st_path.name) if st_path.is_file() else {}
    if not isinstance(st_config, dict):
        raise refused(f"'{st_path.name}' must hold a JSON object", st_path.name)
    if st_config.get("max_seq_length") is None:
        return _window(config.get("max_position_embeddings", 512), "config.json", "max_position_embeddings")
    window = _window(st_config["max_seq_length"], st_path.name, "max_seq_length")
    if "max_position_embeddings" not in config:
        return window
    # A window past the model's position table would fail every longer input: the table bounds it.
    return min(window, _window(config["max_position_embeddings"], "config.json", "max_position_embeddings"))


def convert_embedding(src: Path, out: Path, *, pooling: str, normalise: bool) -> dict[str, Any]:
    """``src`` as ONNX; ``pooling`` and ``normalise`` are the layout the importer read from the source folder
    (``sentence_transformer_layout``), which ``src``, holding only the kept files, may no longer show."""
    import numpy as np
    import onnxruntime as ort
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel

    try:  # the importer checked these before starting this process; a refusal here is a clean message all the same
        config = read_json(src / "config.json", "config.json")
        if not isinstance(config, dict):
            raise refused("'config.json' must hold a JSON object", "config.json")
        max_tokens = max_sequence_length(src, config)
    except InvalidInput as exc:
        raise ConversionError(exc.detail) from None
    started = time.perf_counter()
    try:
        encoder = AutoModel.from_pretrained(
            src, trust_remote_code=False, local_files_only=True, use_safetensors=True, attn_implementation="eager"
        ).eval()
    except Exception as exc:  # transformers' errors name server paths: the reason is given in our words
        raise ConversionError(
            f"config.json and the safetensors weights do not load as a transformers encoder ({type(exc).__name__}): "
            "check that the weights match the architecture and shapes config.json describes"
        ) from None
    takes_token_types = "token_type_ids" in inspect.signature(encoder.forward).parameters

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            extra = {"token_type_ids": torch.zeros_like(input_ids)} if takes_token_types else {}
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
            if pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1) if normalise else pooled

    wrapper = Pooled().eval()
    tokenizer = Tokenizer.from_file(str(src / "tokenizer.json"))
    tokenizer.no_truncation()
    pad_id = config.get("pad_token_id")
    tokenizer.enable_padding(pad_id=pad_id if isinstance(pad_id, int) and 0 <= pad_id < 2**31 else 0)
    encoded = tokenizer.encode_batch(_CHECK_SENTENCES)
    ids = torch.tensor([e.ids for e in encoded], dtype=torch.long)
    mask = torch.tensor([e.attention_mask for e in encoded], dtype=torch.long)
    try:
        with torch.no_grad():
            expected = wrapper(ids, mask).numpy()
            torch.onnx.export(
                wrapper,
                (ids, mask),
                str(out / ONNX_NAME),
                input_names=["input_ids", "attention_mask"],
                output_names=["embeddings"],
                dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}},
                opset_version=17,
                dynamo=False,
            )
    except Exception as exc:
        raise ConversionError(
            f"the encoder fails on a tokenised sentence or does not export to ONNX ({type(exc).__name__})"
        ) from None
    session = ort.InferenceSession(str(out / ONNX_NAME), providers=["CPUExecutionProvider"])
    (got,) = session.run(["embeddings"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    difference = float(np.abs(np.asarray(got) - expected).max())
    if difference > 1e-3:
        raise ConversionError(f"the ONNX export differs from the model by {difference:.2e}; it was not kept")
    try:  # the graph as it will be served: no external data, every id and the whole window run
        probe_embedding_graph(
            (out / ONNX_NAME).read_bytes(), src / "tokenizer.json", file=ONNX_NAME, max_tokens=max_tokens
        )
    except InvalidInput as exc:
        raise ConversionError(exc.detail) from None
    return {
        "dimensions": int(expected.shape[1]),
        "max_tokens": max_tokens,
        "pooling": pooling,
        "normalized": normalise,
        "export_max_abs_diff": difference,
        "convert_seconds": round(time.perf_counter() - started, 2),
    }


def _fold_chat_template(out: Path) -> bool:
    """transformers 5 saves the template beside the config; keep one file, tokenizer_config.json, holding it."""
    template_path = out / "chat_template.jinja"
    config_path = out / "tokenizer_config.json"
    config = _read_json(config_path) if config_path.exists() else {}
    if template_path.exists():
        config["chat_template"] = template_path.read_text(encoding="utf-8")
        template_path.unlink()
        config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
    return bool(config.get("chat_template"))


def convert_gguf(src: Path, out: Path, gguf_file: str) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=gguf_file, local_files_only=True)
    except Exception as exc:  # transformers' message names server paths: ours names the file
        raise ConversionError(
            f"'{gguf_file}' holds no tokenizer transformers can read ({type(exc).__name__})"
        ) from None
    try:
        model = AutoModelForCausalLM.from_pretrained(
            src, gguf_file=gguf_file, dtype=torch.float32, local_files_only=True, trust_remote_code=False
        )
    except Exception as exc:
        raise ConversionError(
            f"'{gguf_file}' could not be read and dequantised ({type(exc).__name__}): an architecture or "
            "quantisation transformers does not support, or a damaged file"
        ) from None
    model.eval()  # type: ignore[no-untyped-call]  # transformers' auto classes are untyped
    dequantise_seconds = time.perf_counter() - started
    # A GGUF-loaded model refuses save_pretrained ("quantized with gguf"); its weights are already plain
    # float32 tensors, so dropping the quantiser's bookkeeping is all the conversion needs.
    model.hf_quantizer = None  # type: ignore[assignment]  # typed as a submodule by torch's __setattr__ stubs
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    has_template = _fold_chat_template(out)
    config = model.config
    return {
        "architecture": type(model).__name__,
        "context_length": int(getattr(config, "max_position_embeddings", 0) or 0),
        "vocab_size": int(config.vocab_size),
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "has_chat_template": has_template,
        "dequantise_seconds": round(dequantise_seconds, 2),
        "convert_seconds": round(time.perf_counter() - started, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["embedding", "gguf"])
    parser.add_argument("src", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--gguf-file", default="")
    parser.add_argument("--pooling", choices=["mean", "cls"], default="mean")
    parser.add_argument("--normalise", action="store_true")
    args = parser.parse_args(argv)
    exit_with_parent()
    forbid_unpickling()
    # Never reach for the hub: every file the conversion needs is in ``src``.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        if args.kind == "embedding":
            report = convert_embedding(args.src, args.out, pooling=args.pooling, normalise=args.normalise)
        else:
            report = convert_gguf(args.src, args.out, args.gguf_file)
    except ConversionError as exc:
        report = {"error": str(exc)}
    except MemoryError:
        raise  # no report: the parent says the conversion needed more memory than an import may use
    except Exception as exc:  # the model's fault here; a library's message names server paths, so only its kind
        files = f"'{args.gguf_file}'" if args.kind == "gguf" else "config.json and the safetensors weights"
        report = {"error": f"the model could not be converted: {files} did not load ({type(exc).__name__})"}
    (args.out / REPORT).write_text(json.dumps(report), encoding="utf-8")
    return 0 if "error" not in report else 2


if __name__ == "__main__":
    sys.exit(main())

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
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPORT = "report.json"
ONNX_NAME = "model.onnx"
_ST_MODULES = {"Transformer", "Pooling", "Normalize"}
_CHECK_SENTENCES = ["A man is eating food.", "The quick brown fox jumps over the lazy dog, twice."]


class ConversionError(Exception):
    """The model cannot be converted; the message says why (it becomes the import's 4xx detail)."""


def _read_json(path: Path) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return value


def sentence_transformer_layout(src: Path) -> tuple[str, bool]:
    """(pooling, normalise) from modules.json + the pooling config; mean + normalise when there is none."""
    modules_path = src / "modules.json"
    if not modules_path.exists():
        return "mean", True
    modules = json.loads(modules_path.read_text(encoding="utf-8"))
    pooling, normalise = "mean", False
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        if kind not in _ST_MODULES:
            raise ConversionError(
                f"modules.json names a '{kind}' module; only Transformer, Pooling and Normalize are supported"
            )
        if kind == "Normalize":
            normalise = True
        if kind == "Pooling":
            config_path = src / str(module.get("path", "")) / "config.json"
            config = _read_json(config_path) if config_path.exists() else {}
            if config.get("pooling_mode_cls_token"):
                pooling = "cls"
            elif config.get("pooling_mode_mean_tokens", True):
                pooling = "mean"
            else:
                raise ConversionError("the Pooling module uses a mode other than mean or CLS; it is not supported")
    return pooling, normalise


def max_sequence_length(src: Path, config: dict[str, Any]) -> int:
    st_config = src / "sentence_bert_config.json"
    if st_config.exists():
        value = _read_json(st_config).get("max_seq_length")
        if isinstance(value, int) and value > 0:
            return value
    return int(config.get("max_position_embeddings", 512))


def convert_embedding(src: Path, out: Path) -> dict[str, Any]:
    import numpy as np
    import onnxruntime as ort
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel

    pooling, normalise = sentence_transformer_layout(src)
    config = _read_json(src / "config.json")
    started = time.perf_counter()
    encoder = AutoModel.from_pretrained(
        src, trust_remote_code=False, local_files_only=True, use_safetensors=True, attn_implementation="eager"
    ).eval()
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
    tokenizer.enable_padding(pad_id=int(config.get("pad_token_id") or 0))
    encoded = tokenizer.encode_batch(_CHECK_SENTENCES)
    ids = torch.tensor([e.ids for e in encoded], dtype=torch.long)
    mask = torch.tensor([e.attention_mask for e in encoded], dtype=torch.long)
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
    session = ort.InferenceSession(str(out / ONNX_NAME), providers=["CPUExecutionProvider"])
    (got,) = session.run(["embeddings"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    difference = float(np.abs(np.asarray(got) - expected).max())
    if difference > 1e-3:
        raise ConversionError(f"the ONNX export differs from the model by {difference:.2e}; it was not kept")
    return {
        "dimensions": int(expected.shape[1]),
        "max_tokens": max_sequence_length(src, config),
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
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=gguf_file, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        src, gguf_file=gguf_file, dtype=torch.float32, local_files_only=True, trust_remote_code=False
    )
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


def _exit_with_parent() -> None:
    """Stop converting when the process that asked is gone (``maas up`` stopped): nobody would read the result."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["embedding", "gguf"])
    parser.add_argument("src", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--gguf-file", default="")
    args = parser.parse_args(argv)
    _exit_with_parent()
    # Never reach for the hub: every file the conversion needs is in ``src``.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        if args.kind == "embedding":
            report = convert_embedding(args.src, args.out)
        else:
            report = convert_gguf(args.src, args.out, args.gguf_file)
    except ConversionError as exc:
        report = {"error": str(exc)}
    except Exception as exc:  # any loader failure is the model's fault here: report it, don't crash silently
        report = {"error": f"the model could not be loaded for conversion: {type(exc).__name__}: {exc}"}
    (args.out / REPORT).write_text(json.dumps(report), encoding="utf-8")
    return 0 if "error" not in report else 2


if __name__ == "__main__":
    sys.exit(main())

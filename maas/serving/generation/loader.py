"""Load a causal LM from an HF-style directory (config.json, model.safetensors, tokenizer files).

This module imports torch and transformers at the top: it is itself imported only when a causal-lm is first
served (``service.py`` imports it lazily), so the API process starts without torch.
"""

from __future__ import annotations

import json
import os
import resource
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase
from transformers.utils import logging as transformers_logging

from maas.errors import InvalidInput

# A model that ships no context length (rare) is served with this one.
_DEFAULT_CONTEXT = 2048
_LOAD_LOCK = threading.Lock()


@dataclass
class CausalLM:
    model: Any  # a transformers PreTrainedModel (AutoModelForCausalLM): untyped upstream
    tokenizer: PreTrainedTokenizerBase
    eos_token_ids: frozenset[int]
    context_length: int
    has_chat_template: bool
    rss_bytes: int  # resident memory the model added to this process (the weights, mostly)
    accepts_logits_to_keep: bool
    rss_baseline: int = 0

    def refresh_rss(self) -> None:
        """Weights are memory-mapped and paged in by the first forward pass: measure again after it."""
        self.rss_bytes = max(self.rss_bytes, _rss_bytes() - self.rss_baseline)


def _context_length(config: Any, tokenizer: PreTrainedTokenizerBase) -> int:
    for name in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    # Tokenizers without a limit report 1e30: only a plausible number counts.
    return limit if isinstance(limit, int) and 0 < limit < 1_000_000 else _DEFAULT_CONTEXT


def _eos_ids(model: Any, tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return frozenset(ids)


def _refuse_remote_code(directory: Path) -> None:
    # Import already rejects these; a fine-tuned model written by a job is checked again here, because
    # loading is the moment code would run.
    config = json.loads((directory / "config.json").read_text())
    if "auto_map" in config:
        raise InvalidInput("this model's config.json has an auto_map (custom code); it cannot be served")


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: the peak is the best we have
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def load_causal_lm(directory: Path) -> CausalLM:
    _refuse_remote_code(directory)
    # A server's console (and its JSON log) is no place for a progress bar redrawn with carriage returns.
    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    with _LOAD_LOCK:  # two first requests for two models would double the peak memory
        before = _rss_bytes()
        try:
            tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=False, local_files_only=True)
            loaded: Any = AutoModelForCausalLM.from_pretrained(
                directory,
                trust_remote_code=False,
                local_files_only=True,
                dtype=torch.float32,
                output_loading_info=True,
                # Reported in ``mismatched_keys`` with both shapes (and refused below), where the default raises
                # "look at the above report", a report only the server log sees.
                ignore_mismatched_sizes=True,
            )
            model: Any = loaded[0]
            loading: dict[str, Any] = loaded[1]
        except (ValueError, RuntimeError, KeyError, TypeError, AttributeError, IndexError) as exc:
            # An imported model whose files disagree (weights of another shape than config.json says, an
            # architecture transformers does not know, a tokenizer.json it cannot read) is the model's fault:
            # every call to it was a 500. Said once per call as a 400 naming what failed.
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise InvalidInput(f"the model's files do not load: {type(exc).__name__}: {reason}") from exc
        mismatched = sorted(loading.get("mismatched_keys") or [], key=lambda item: str(item[0]))
        if mismatched:
            name, stored, expected = mismatched[0]
            raise InvalidInput(
                f"the model's weights do not match its config.json: {len(mismatched)} tensors of another shape "
                f"(e.g. '{name}' is {list(stored)} in the weights, {list(expected)} by the config)"
            )
        missing = sorted(loading.get("missing_keys") or [])
        if missing:
            # transformers fills them with random numbers and serves gibberish: refused instead.
            raise InvalidInput(
                f"the model's weights lack {len(missing)} tensors its config.json describes (e.g. '{missing[0]}'); "
                "import weights that match the config"
            )
        model.eval()
        rss = max(0, _rss_bytes() - before)
    forward_args = model.forward.__code__.co_varnames[: model.forward.__code__.co_argcount]
    return CausalLM(
        model=model,
        tokenizer=tokenizer,
        eos_token_ids=_eos_ids(model, tokenizer),
        context_length=_context_length(model.config, tokenizer),
        has_chat_template=bool(getattr(tokenizer, "chat_template", None)),
        rss_bytes=rss,
        accepts_logits_to_keep="logits_to_keep" in forward_args,
        rss_baseline=before,
    )

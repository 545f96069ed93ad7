"""Load a causal LM from an HF-style directory (config.json, model.safetensors, tokenizer files).

This module imports torch and transformers at the top: it is itself imported only when a causal-lm is first
served (``service.py`` imports it lazily), so the API process starts without torch.
"""

from __future__ import annotations

import logging
import os
import resource
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING
from transformers.utils import logging as transformers_logging

from maas.errors import InvalidInput
from maas.registry.causal_lm_files import CONFIG, CausalLMFiles, check_causal_lm_files, folder_files
from maas.registry.safetensors_check import ModelFileError

log = logging.getLogger("maas.serving.generation")

# A model that ships no context length (rare) is served with this one.
_DEFAULT_CONTEXT = 2048
_LOAD_LOCK = threading.Lock()
_T = TypeVar("_T")


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


def _checked_files(directory: Path) -> CausalLMFiles:
    """The import's checks again (a model registered before them, a fine-tuned model a job wrote): loading is
    the moment a shard map could reach an unpickler or a file outside the folder, or a config fail every call."""
    try:
        return check_causal_lm_files(folder_files(directory))
    except ModelFileError as exc:
        raise InvalidInput(f"the model's files do not load: {exc}") from None


def _step(action: Callable[[], _T], directory: Path, what: str) -> _T:
    """Run one loading step; a failure is the model's fault, said in our words (the library's message names
    server paths): the original goes to the server log only."""
    try:
        return action()
    except MemoryError:
        raise
    except Exception as exc:
        log.warning("model files in %s do not load: %s", directory, what, exc_info=True)
        raise InvalidInput(f"the model's files do not load: {what} ({type(exc).__name__})") from None


def _check_vocabulary(model: Any, tokenizer: PreTrainedTokenizerBase) -> None:
    """A token id past the embedding's rows fails every prompt that holds it (an IndexError in the model)."""
    rows = int(model.get_input_embeddings().num_embeddings)
    largest = max(tokenizer.get_vocab().values(), default=-1)
    if largest >= rows:
        raise InvalidInput(
            f"the model's files do not load: the tokenizer (tokenizer.json) has token ids up to {largest}, but the "
            f"model's embedding ({CONFIG} vocab_size) has only {rows} rows"
        )


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: the peak is the best we have
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def load_causal_lm(directory: Path) -> CausalLM:
    """The model in ``directory``; InvalidInput naming the file at fault when its files do not load.

    The import runs this same function in its check child (``load_check``), so a model that imported loads."""
    checked = _checked_files(directory)
    model_type = str(checked.config.get("model_type", ""))[:60]
    weights = ", ".join(checked.weights)
    # A server's console (and its JSON log) is no place for a progress bar redrawn with carriage returns.
    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    with _LOAD_LOCK:  # two first requests for two models would double the peak memory
        before = _rss_bytes()
        config: Any = _step(
            lambda: AutoConfig.from_pretrained(directory, trust_remote_code=False, local_files_only=True),
            directory,
            f"{CONFIG} does not describe a model this server can build (model_type '{model_type}')",
        )
        if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
            raise InvalidInput(
                f"the model's files do not load: {CONFIG} has model_type '{model_type}', which has no causal LM "
                "architecture here"
            )
        tokenizer: PreTrainedTokenizerBase = _step(
            lambda: AutoTokenizer.from_pretrained(directory, trust_remote_code=False, local_files_only=True),
            directory,
            "tokenizer.json (with tokenizer_config.json) is not a tokenizer transformers can read",
        )
        loaded: Any = _step(
            lambda: AutoModelForCausalLM.from_pretrained(
                directory,
                config=config,
                trust_remote_code=False,
                local_files_only=True,
                # Never a pickle: without this transformers falls back to pytorch_model.bin (torch.load).
                use_safetensors=True,
                dtype=torch.float32,
                output_loading_info=True,
                # Reported in ``mismatched_keys`` with both shapes (and refused below), where the default raises
                # "look at the above report", a report only the server log sees.
                ignore_mismatched_sizes=True,
            ),
            directory,
            f"the weights in {weights} do not load into the {type(config).__name__} {CONFIG} describes",
        )
        model: Any = loaded[0]
        loading: dict[str, Any] = loaded[1]
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
        _check_vocabulary(model, tokenizer)
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

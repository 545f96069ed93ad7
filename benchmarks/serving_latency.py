"""Serving overhead, measured side by side on this machine.

    (a) an in-process ONNX Runtime call of the served model (one instance per call),
    (b) a bare FastAPI endpoint that parses the same JSON body and returns a constant,
    (c) ``POST /api/v1/endpoints/{name}/predict`` on the real MaaS platform,

each at concurrency 1 and 32, with latency p50/p99 and throughput, and the two targets:
p50 of (c)/(b) at c=1 <= 1.5x and throughput of (c)/(b) at c=32 >= 0.7x.

    .venv/bin/python benchmarks/serving_latency.py                  # all three
    .venv/bin/python benchmarks/serving_latency.py --skip-platform  # (a) with a tiny model, and (b)

Both servers run as separate processes started here, with the same uvicorn settings (one worker, log
level warning, no access log), on free ports of 127.0.0.1; every request goes to 127.0.0.1 only.
The subprocesses are always stopped at the end, also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from pydantic import BaseModel

REPO_ROOT = Path(__file__).resolve().parent.parent
UVICORN_FLAGS = ["--workers", "1", "--log-level", "warning", "--no-access-log"]
ENDPOINT_NAME = "bench"
MODEL_NAME = "bench-model"


class BenchmarkError(RuntimeError):
    """Setting up a scenario failed; the message says which step and why."""


# --------------------------------------------------------------------------------------------------
# (b) the bare FastAPI app, run by uvicorn as `benchmarks.serving_latency:create_bare_app --factory`


class BarePredictRequest(BaseModel):
    """The platform's native predict body (``maas.api.native.schemas.PredictRequest``), without docs."""

    instances: list[dict[str, Any]]


def create_bare_app() -> Any:
    """A FastAPI app that validates a predict body like the platform does and returns a constant."""
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/readyz")
    def readyz() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/predict")
    async def predict(body: BarePredictRequest) -> dict[str, Any]:
        return {"predictions": [0] * len(body.instances)}

    return app


# --------------------------------------------------------------------------------------------------
# Data and models


def breast_cancer_frame() -> Any:
    from sklearn.datasets import load_breast_cancer

    return load_breast_cancer(as_frame=True).frame


def predict_payload(frame: Any) -> bytes:
    row = frame.drop(columns=["target"]).iloc[0]
    return json.dumps({"instances": [{str(k): float(v) for k, v in row.items()}]}).encode()


def tiny_onnx_model(n_features: int = 30, hidden: int = 64) -> bytes:
    """A small MLP (features -> hidden -> 2 classes, softmax), like a tabular-mlp export."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((n_features, hidden)).astype(np.float32), "w1"),
        numpy_helper.from_array(np.zeros(hidden, np.float32), "b1"),
        numpy_helper.from_array(rng.standard_normal((hidden, 2)).astype(np.float32), "w2"),
        numpy_helper.from_array(np.zeros(2, np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["features", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w2"], ["l0"]),
        helper.make_node("Add", ["l0", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "bench-mlp",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", n_features])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
}


@dataclass
class InProcessModel:
    session: Any
    feed: dict[str, Any]
    source: str

    def __call__(self) -> None:
        self.session.run(None, self.feed)


def load_in_process(model: bytes | str, source: str, ort_threads: int) -> InProcessModel:
    """An ONNX Runtime session with the platform's options, and a one-instance input for it."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = ort_threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed: dict[str, Any] = {}
    for spec in session.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in spec.shape]
        dtype = _ORT_DTYPES.get(spec.type)
        if dtype is None:
            feed[spec.name] = np.full(shape, "", dtype=object)
        elif dtype is np.float32 or dtype is np.float64:
            feed[spec.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feed[spec.name] = np.zeros(shape, dtype=dtype)
    return InProcessModel(session, feed, source)


def find_served_model(maas_home: Path) -> Path | None:
    """The newest blob in the platform's artifact store that ONNX Runtime can load."""
    import onnxruntime as ort

    root = maas_home / "artifacts"
    blobs = [p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")] if root.is_dir() else []
    for path in sorted(blobs, key=lambda p: p.stat().st_mtime, reverse=True):
        if path.stat().st_size > 512 * 1024 * 1024:
            continue
        try:
            ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception:  # not an ONNX model (a dataset blob, ...)
            continue
        return path
    return None


# --------------------------------------------------------------------------------------------------
# Measurement


@dataclass
class Result:
    scenario: str
    concurrency: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    throughput: float
    errors: int
    first_error: str = ""

    @classmethod
    def of(cls, scenario: str, concurrency: int, latencies: list[float], seconds: float, errors: list[str]) -> Result:
        values = np.asarray(latencies) * 1000 if latencies else np.asarray([np.nan])
        return cls(
            scenario=scenario,
            concurrency=concurrency,
            requests=len(latencies),
            seconds=seconds,
            p50_ms=float(np.percentile(values, 50)),
            p99_ms=float(np.percentile(values, 99)),
            throughput=len(latencies) / seconds if seconds > 0 else 0.0,
            errors=len(errors),
            first_error=errors[0] if errors else "",
        )


@dataclass
class Budget:
    """How much to run per scenario and concurrency: whichever of requests or seconds ends first."""

    requests: dict[int, int] = field(default_factory=lambda: {1: 2000, 32: 5000})
    max_seconds: float = 10.0
    warmup_requests: int = 200


def measure_in_process(model: InProcessModel, concurrency: int, requests: int, max_seconds: float) -> Result:
    """``concurrency`` threads calling ``session.run`` (ONNX Runtime releases the GIL while it runs)."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    issued = 0
    deadline = time.perf_counter() + max_seconds

    def worker() -> None:
        nonlocal issued
        mine: list[float] = []
        while True:
            with lock:
                if issued >= requests or time.perf_counter() > deadline:
                    break
                issued += 1
            started = time.perf_counter()
            try:
                model()
            except Exception as exc:  # counted and reported
                with lock:
                    errors.append(repr(exc))
                continue
            mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Result.of("(a) in-process onnxruntime", concurrency, latencies, time.perf_counter() - started, errors)


async def _measure_http(
    scenario: str, url: str, body: bytes, headers: dict[str, str], concurrency: int, requests: int, max_seconds: float
) -> Result:
    """``concurrency`` workers, each with its own keep-alive HTTP/1.1 connection (its own client).

    One shared ``AsyncClient`` with a pool of 32 was measured to cost the client itself about 3x
    in throughput at concurrency 32 (httpcore's pool bookkeeping), which would hide the servers'
    differences; a client per worker does not have that cost.
    """
    latencies: list[float] = []
    errors: list[str] = []
    issued = 0
    headers = {"content-type": "application/json", **headers}
    deadline = time.perf_counter() + max_seconds

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal issued
        while issued < requests and time.perf_counter() < deadline:
            issued += 1
            started = time.perf_counter()
            try:
                response = await client.post(url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                errors.append(repr(exc))
                continue
            elapsed = time.perf_counter() - started
            if response.status_code != 200:
                errors.append(f"HTTP {response.status_code}: {response.text[:300]}")
                continue
            latencies.append(elapsed)

    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(httpx.AsyncClient(timeout=30.0, trust_env=False))
            for _ in range(concurrency)
        ]
        started = time.perf_counter()
        deadline = started + max_seconds
        await asyncio.gather(*(worker(client) for client in clients))
        seconds = time.perf_counter() - started
    return Result.of(scenario, concurrency, latencies, seconds, errors)


def _event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def measure_http(
    scenario: str, url: str, body: bytes, headers: dict[str, str], concurrency: int, budget: Budget
) -> Result:
    # The load generator's own heap (numpy, onnxruntime, httpx) is frozen before each run: otherwise its
    # full collections (tens of ms) land in the measured latencies of whichever server is being timed.
    gc.collect()
    gc.freeze()
    with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
        runner.run(_measure_http(scenario, url, body, headers, concurrency, budget.warmup_requests, budget.max_seconds))
        return runner.run(
            _measure_http(scenario, url, body, headers, concurrency, budget.requests[concurrency], budget.max_seconds)
        )


# --------------------------------------------------------------------------------------------------
# Subprocesses


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A server subprocess in its own process group, with its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            argv, cwd=REPO_ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=5.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise BenchmarkError(
                        f"{self.name} exited with code {self.process.returncode} before it was ready; "
                        f"last output:\n{self.log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(url).status_code == 200:
                        return
                time.sleep(0.2)
        raise BenchmarkError(
            f"{self.name} was not ready within {timeout:.0f} s ({url}); last output:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        else:
            # The leader is gone; anything it left behind in its group goes too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self._log.close()


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    try:
        yield server
    finally:
        server.stop()


def bare_server(workdir: Path) -> tuple[Server, str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    argv = [sys.executable, "-m", "uvicorn", "--factory", "benchmarks.serving_latency:create_bare_app"]
    argv += ["--host", "127.0.0.1", "--port", str(port), *UVICORN_FLAGS]
    return Server("bare FastAPI server", argv, env, workdir / "bare.log"), f"http://127.0.0.1:{port}"


def maas_executable() -> str:
    local = REPO_ROOT / ".venv" / "bin" / "maas"
    if local.exists():
        return str(local)
    found = shutil.which("maas")
    if found is None:
        raise BenchmarkError("no `maas` executable: install the package (pip install -e .) into .venv first")
    return found


# --------------------------------------------------------------------------------------------------
# (c) the platform, driven through its native API


def _checked(response: httpx.Response, step: str, expected: tuple[int, ...] = (200, 201, 202)) -> Any:
    if response.status_code not in expected:
        raise BenchmarkError(f"{step}: HTTP {response.status_code} {response.text[:1000]}")
    return response.json()


def prepare_platform(base: str, maas_home: Path, frame: Any, payload: bytes, timeout: float) -> dict[str, str]:
    """Create a tenant, upload the data, train, deploy; returns the tenant's auth headers."""
    admin_key = (maas_home / "admin.key").read_text().strip()
    with httpx.Client(base_url=base, timeout=60.0, trust_env=False) as client:
        tenant = _checked(
            client.post("/api/v1/tenants", json={"name": "bench"}, headers={"Authorization": f"Bearer {admin_key}"}),
            "create tenant",
        )
        headers = {"Authorization": f"Bearer {tenant['key']}"}
        csv = io.BytesIO(frame.to_csv(index=False).encode())
        dataset = _checked(
            client.post(
                "/api/v1/datasets",
                files={"file": ("breast_cancer.csv", csv, "text/csv")},
                data={"name": "breast-cancer"},
                headers=headers,
            ),
            "upload dataset",
        )
        job = _checked(
            client.post(
                "/api/v1/jobs",
                json={
                    "dataset_id": dataset["id"],
                    "family": "tabular-mlp",
                    "target": "target",
                    "model_name": MODEL_NAME,
                    "hyperparameters": {"epochs": 30},
                },
                headers=headers,
            ),
            "submit training job",
        )
        _wait_for_job(client, job["id"], headers, timeout)
        _checked(
            client.post(
                "/api/v1/endpoints", json={"name": ENDPOINT_NAME, "model": MODEL_NAME, "version": 1}, headers=headers
            ),
            "create endpoint",
        )
        _wait_for_predict(client, payload, headers, timeout=120.0)
    return headers


def _wait_for_job(client: httpx.Client, job_id: str, headers: dict[str, str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        job = _checked(client.get(f"/api/v1/jobs/{job_id}", headers=headers), "poll training job")
        if job["state"] != state:
            state = job["state"]
            log(f"  training job {job_id}: {state}")
        if state == "succeeded":
            return
        if state in ("failed", "cancelled"):
            raise BenchmarkError(f"training job {job_id} {state}: {job.get('error')}")
        time.sleep(1.0)
    raise BenchmarkError(f"training job {job_id} did not finish within {timeout:.0f} s (last state {state!r})")


TERMINAL_JOB_STATES = ("succeeded", "failed", "cancelled")


def wait_for_demo(base: str, maas_home: Path, timeout: float) -> None:
    """Wait until the ``--demo`` walkthrough has trained its model, so that it uses no CPU during the runs.

    The demo saves its tenant key to ``$MAAS_HOME/demo.key``; it is done training when every job of
    that tenant is in a terminal state (what is left is an endpoint and one predict call).
    """
    key_file = maas_home / "demo.key"
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=base, timeout=30.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if key_file.exists():
                headers = {"Authorization": f"Bearer {key_file.read_text().strip()}"}
                response = client.get("/api/v1/jobs", headers=headers)
                jobs = response.json() if response.status_code == 200 else []
                if jobs and all(job["state"] in TERMINAL_JOB_STATES for job in jobs):
                    time.sleep(2.0)  # the demo's endpoint and sample call
                    return
            time.sleep(1.0)
    log(f"  warning: the --demo walkthrough was still busy after {timeout:.0f} s; measuring anyway")


def _wait_for_predict(client: httpx.Client, payload: bytes, headers: dict[str, str], timeout: float) -> None:
    url = f"/api/v1/endpoints/{ENDPOINT_NAME}/predict"
    deadline = time.monotonic() + timeout
    while True:
        response = client.post(url, content=payload, headers={"content-type": "application/json", **headers})
        if response.status_code == 200:
            return
        if response.status_code not in (404, 409, 503) or time.monotonic() > deadline:
            _checked(response, "first predict")
        time.sleep(0.5)


# --------------------------------------------------------------------------------------------------
# Report


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def table(results: list[Result]) -> str:
    header = f"{'scenario':<32} {'conc':>4} {'requests':>8} {'p50 ms':>9} {'p99 ms':>9} {'req/s':>10} {'errors':>6}"
    lines = [header, "-" * len(header)]
    for r in results:
        lines.append(
            f"{r.scenario:<32} {r.concurrency:>4} {r.requests:>8} {r.p50_ms:>9.3f} {r.p99_ms:>9.3f}"
            f" {r.throughput:>10.1f} {r.errors:>6}"
        )
    for r in results:
        if r.first_error:
            lines.append(f"first error in {r.scenario} c={r.concurrency}: {r.first_error}")
    return "\n".join(lines)


def verdicts(results: list[Result], high: int) -> tuple[list[str], bool]:
    by = {(r.scenario[:3], r.concurrency): r for r in results}
    bare_1, plat_1, bare_n, plat_n = (
        by.get(("(b)", 1)),
        by.get(("(c)", 1)),
        by.get(("(b)", high)),
        by.get(("(c)", high)),
    )
    if not (bare_1 and plat_1 and bare_n and plat_n):
        return ["targets: not evaluated (the platform was not measured)"], True
    latency = plat_1.p50_ms / bare_1.p50_ms
    throughput = plat_n.throughput / bare_n.throughput if bare_n.throughput else 0.0
    latency_ok = latency <= 1.5 and plat_1.errors == 0
    throughput_ok = throughput >= 0.7 and plat_n.errors == 0
    verdict = {True: "PASS", False: "FAIL"}
    return [
        f"(c)/(b) p50 latency at c=1:  {latency:5.2f}x  (target <= 1.5x)  {verdict[latency_ok]}",
        f"(c)/(b) throughput at c={high:<2}: {throughput:5.2f}x  (target >= 0.7x)  {verdict[throughput_ok]}",
    ], latency_ok and throughput_ok


# --------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-platform", action="store_true", help="measure only (a) and (b); (a) uses a tiny model")
    parser.add_argument("--onnx", type=Path, help="ONNX file for (a) instead of the served (or tiny) model")
    parser.add_argument("--requests-low", type=int, default=2000, help="measured requests at concurrency 1")
    parser.add_argument("--requests-high", type=int, default=5000, help="measured requests at the high concurrency")
    parser.add_argument("--concurrency", type=int, default=32, help="the high concurrency")
    parser.add_argument("--max-seconds", type=float, default=10.0, help="cap on each measured run")
    parser.add_argument("--warmup", type=int, default=200, help="warm-up requests before each measured run")
    parser.add_argument("--ort-threads", type=int, default=1, help="intra-op threads for (a), as the platform uses")
    parser.add_argument("--train-timeout", type=float, default=900.0, help="seconds to wait for training")
    parser.add_argument("--startup-timeout", type=float, default=120.0, help="seconds to wait for /readyz")
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    parser.add_argument("--strict", action="store_true", help="exit with code 2 when a target is missed")
    parser.add_argument("--keep-home", action="store_true", help="keep the temporary MAAS_HOME and server logs")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, workdir: Path) -> tuple[list[Result], list[str], bool]:
    budget = Budget({1: args.requests_low, args.concurrency: args.requests_high}, args.max_seconds, args.warmup)
    frame = breast_cancer_frame()
    payload = predict_payload(frame)
    results: list[Result] = []
    platform_results: list[Result] = []
    served_model: Path | None = None

    if not args.skip_platform:
        maas_home = workdir / "maas-home"
        maas_home.mkdir()
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        argv = [maas_executable(), "up", "--host", "127.0.0.1", "--port", str(port), "--demo"]
        log(f"starting the platform: {' '.join(argv)} (MAAS_HOME={maas_home})")
        with running(
            Server("maas up", argv, {**os.environ, "MAAS_HOME": str(maas_home)}, workdir / "maas.log")
        ) as server:
            server.wait_ready(f"{base}/readyz", args.startup_timeout)
            log("platform ready; creating tenant, dataset, training job and endpoint")
            headers = prepare_platform(base, maas_home, frame, payload, args.train_timeout)
            log("waiting for the --demo walkthrough to finish training")
            wait_for_demo(base, maas_home, args.train_timeout)
            url = f"{base}/api/v1/endpoints/{ENDPOINT_NAME}/predict"
            for concurrency in (1, args.concurrency):
                log(f"measuring (c) platform predict at c={concurrency}")
                platform_results.append(measure_http("(c) MaaS predict", url, payload, headers, concurrency, budget))
            served_model = find_served_model(maas_home)

    if args.onnx is not None:
        model = load_in_process(str(args.onnx), f"{args.onnx}", args.ort_threads)
    elif served_model is not None:
        model = load_in_process(str(served_model), f"the served model ({served_model.name[:12]}...)", args.ort_threads)
    else:
        model = load_in_process(tiny_onnx_model(), "a tiny 30-64-2 MLP built with onnx.helper", args.ort_threads)
    log(f"(a) uses {model.source}")
    for concurrency in (1, args.concurrency):
        log(f"measuring (a) in-process onnxruntime at c={concurrency}")
        measure_in_process(model, concurrency, budget.warmup_requests, budget.max_seconds)
        results.append(measure_in_process(model, concurrency, budget.requests[concurrency], budget.max_seconds))

    bare, base = bare_server(workdir)
    with running(bare):
        bare.wait_ready(f"{base}/readyz", args.startup_timeout)
        for concurrency in (1, args.concurrency):
            log(f"measuring (b) bare FastAPI at c={concurrency}")
            results.append(measure_http("(b) bare FastAPI", f"{base}/predict", payload, {}, concurrency, budget))

    results += platform_results
    lines, ok = verdicts(results, args.concurrency)
    return results, [f"(a) model: {model.source}", *lines], ok


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="maas-bench-"))
    try:
        results, notes, ok = run(args, workdir)
    except BenchmarkError as exc:
        log(f"benchmark failed: {exc}")
        return 1
    finally:
        if args.keep_home:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nserving latency on {os.cpu_count()} CPU cores, python {sys.version.split()[0]}\n")
    print(table(results))
    print()
    print("\n".join(notes))
    if args.json is not None:
        args.json.write_text(json.dumps({"results": [asdict(r) for r in results], "notes": notes, "ok": ok}, indent=2))
    return 2 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())

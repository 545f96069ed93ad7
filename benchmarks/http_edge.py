"""What the hardened HTTP edge costs: uvicorn's own httptools protocol against MaaS's, side by side.

    .venv/bin/python benchmarks/http_edge.py [--requests 3000] [--rounds 3]

Two uvicorn servers run in this process's children, each on a free port of 127.0.0.1, serving the same
bare FastAPI app (a GET returning a constant, and a POST that parses a JSON body of one predict row). One uses
uvicorn's ``HttpToolsProtocol``, the other ``maas.api.http_protocol`` (request heads counted and bounded,
a head timer, framing checked). The JSON route uses FastAPI's default route class on the first server and
MaaS's ``JsonBodyRoute`` on the second. Rounds alternate between the two so that both see the same machine;
the script prints requests per second of each and the ratio (MaaS / uvicorn) at concurrency 1 and 16.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import statistics
import time
from typing import Any

import httpx
import uvicorn
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel

from maas.api.http_protocol import HeadLimits, hardened_protocol
from maas.api.json_body import JsonBodyRoute

ROW = {f"feature {i}": float(i) / 7 for i in range(30)}


class Body(BaseModel):
    instances: list[dict[str, Any]]


def _app(hardened: bool) -> FastAPI:
    router = APIRouter(route_class=JsonBodyRoute) if hardened else APIRouter()

    @router.get("/ping")
    async def ping() -> dict[str, str]:
        return {"status": "ok"}

    @router.post("/echo")
    async def echo(body: Body) -> dict[str, int]:
        return {"rows": len(body.instances)}

    app = FastAPI()
    app.include_router(router)
    return app


def _serve(port: int, hardened: bool) -> None:
    protocol: Any = hardened_protocol(HeadLimits(max_bytes=64 * 1024, max_headers=100)) if hardened else "httptools"
    config = uvicorn.Config(
        _app(hardened), host="127.0.0.1", port=port, log_level="warning", access_log=False, http=protocol
    )
    uvicorn.Server(config).run()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ping", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not start")


async def _load(url: str, path: str, requests: int, concurrency: int) -> float:
    """Requests per second for ``requests`` calls spread over ``concurrency`` kept-alive connections."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

        async def worker(count: int) -> None:
            for _ in range(count):
                if path == "/echo":
                    response = await client.post(path, json={"instances": [ROW]})
                else:
                    response = await client.get(path)
                response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(worker(requests // concurrency) for _ in range(concurrency)))
        return (requests // concurrency * concurrency) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    servers = {}
    processes = []
    try:
        for name, hardened in (("uvicorn", False), ("maas", True)):
            port = _free_port()
            process = context.Process(target=_serve, args=(port, hardened), daemon=True)
            process.start()
            processes.append(process)
            servers[name] = f"http://127.0.0.1:{port}"
        for url in servers.values():
            _wait_ready(url)
        for path in ("/ping", "/echo"):
            for concurrency in (1, 16):
                rates: dict[str, list[float]] = {name: [] for name in servers}
                asyncio.run(_load(servers["uvicorn"], path, 200, concurrency))  # warm-up
                asyncio.run(_load(servers["maas"], path, 200, concurrency))
                for _ in range(args.rounds):
                    for name, url in servers.items():
                        rates[name].append(asyncio.run(_load(url, path, args.requests, concurrency)))
                bare, ours = statistics.median(rates["uvicorn"]), statistics.median(rates["maas"])
                print(
                    f"{path:6} c={concurrency:<3} uvicorn {bare:8.0f} req/s   maas edge {ours:8.0f} req/s   "
                    f"ratio {ours / bare:.3f}"
                )
    finally:
        for process in processes:
            process.terminate()
            process.join(5)


if __name__ == "__main__":
    main()

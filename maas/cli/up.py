"""``maas up``: the API, the job dispatcher and the serving runtimes in one process."""

from __future__ import annotations

import threading
import time

import httpx
import uvicorn
from rich.console import Console

from maas.api.app import create_app
from maas.auth.admin_key import ensure_admin_key
from maas.cli.demo import run_demo
from maas.config import Settings
from maas.logs import configure_json_logging

console = Console(stderr=True, soft_wrap=True)  # long lines (the curl) stay pasteable


def _wait_ready(base_url: str, timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


def serve(settings: Settings, host: str, port: int, demo: bool) -> None:
    configure_json_logging()
    settings.home.mkdir(parents=True, exist_ok=True)
    admin_key, created = ensure_admin_key(settings.admin_key, settings.admin_key_path)
    if created:
        console.print(f"[bold]Platform admin key[/] (shown once; saved to {settings.admin_key_path}, mode 0600):")
        print(admin_key, flush=True)
    base_url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"  # noqa: S104

    def demo_then_announce() -> None:
        if not _wait_ready(base_url):
            console.print("[red]the server did not become ready; no demo[/]")
            return
        console.print(f"[bold green]MaaS is up[/] at {base_url} (API docs: {base_url}/docs)")
        if demo:
            try:
                run_demo(base_url, admin_key, settings.home, console)
            except Exception as exc:
                console.print(f"[red]demo failed: {exc}[/]")

    threading.Thread(target=demo_then_announce, name="demo", daemon=True).start()
    config = uvicorn.Config(create_app(settings), host=host, port=port, log_level="warning", access_log=False)
    uvicorn.Server(config).run()

"""``maas up``: the API, the job dispatcher and the serving runtimes in one process."""

from __future__ import annotations

import logging
import threading
import time

import httpx
import uvicorn
from rich.console import Console

from maas.api.app import create_app
from maas.api.http_protocol import HeadLimits, hardened_protocol
from maas.auth.admin_key import ensure_admin_key
from maas.cli.demo import print_openai_samples, run_demo
from maas.config import Settings
from maas.db.engine import make_engine, make_session_factory
from maas.logs import configure_json_logging
from maas.registry import shipped
from maas.storage import open_store

console = Console(stderr=True, soft_wrap=True)  # long lines (the curl) stay pasteable
log = logging.getLogger("maas.up")


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


def _shipped_setting(settings: Settings) -> str | None:
    """Which shipped models to publish: 'all' (default), 'none', or a comma list of catalog names."""
    return settings.shipped_models


def publish_shipped_models(settings: Settings, base_url: str) -> list[str]:
    """Publish the installed shipped models once the server is up; returns the names ready to call.

    Runs beside the server (a thread of ``maas up``), so the API is ready at once for everything else; a
    model appears in ``GET /v1/models`` when its import finishes (a minute or so for the LM's dequantisation
    on first start, a second when already published)."""
    models = shipped.selected(_shipped_setting(settings))
    if not models or not _wait_ready(base_url):
        return []
    engine = make_engine(settings.resolved_database_url)
    factory = make_session_factory(engine)
    store = open_store(settings.resolved_storage_url)
    ready: list[str] = []
    try:
        for model in models:
            if not shipped.is_installed(model):
                console.print(f"platform model {model.name}: {model.distribution} is not installed; skipped")
                continue
            started = time.monotonic()
            try:
                result = shipped.publish(factory, store, model)
            except Exception as exc:
                log.exception("publishing platform model %s failed", model.name)
                console.print(f"[red]platform model {model.name} could not be published: {exc}[/]")
                continue
            how = "already published" if result.already_present else f"imported in {time.monotonic() - started:.1f} s"
            console.print(
                f"[bold green]platform model ready:[/] {model.name} ({result.family}, version {result.version}, {how})"
            )
            log.info("platform model %s ready (%s, version %d)", model.name, result.family, result.version)
            ready.append(model.name)
    finally:
        engine.dispose()
    return ready


def serve(settings: Settings, host: str, port: int, demo: bool) -> None:
    configure_json_logging()
    settings.home.mkdir(parents=True, exist_ok=True)
    admin_key, created = ensure_admin_key(settings.admin_key, settings.admin_key_path)
    if created:
        console.print(f"[bold]Platform admin key[/] (shown once; saved to {settings.admin_key_path}, mode 0600):")
        print(admin_key, flush=True)
    base_url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"  # noqa: S104

    published: list[str] = []
    publishing_done = threading.Event()

    def publish() -> None:
        try:
            published.extend(publish_shipped_models(settings, base_url))
        except Exception:
            log.exception("publishing the shipped models failed")
        finally:
            publishing_done.set()

    def demo_then_announce() -> None:
        if not _wait_ready(base_url):
            console.print("[red]the server did not become ready; no demo[/]")
            return
        console.print(f"[bold green]MaaS is up[/] at {base_url} (API docs: {base_url}/docs)")
        if demo:
            try:
                key = run_demo(base_url, admin_key, settings.home, console)
                publishing_done.wait()
                print_openai_samples(base_url, key, published, console)
            except Exception as exc:
                console.print(f"[red]demo failed: {exc}[/]")

    threading.Thread(target=publish, name="shipped-models", daemon=True).start()
    threading.Thread(target=demo_then_announce, name="demo", daemon=True).start()
    protocol = hardened_protocol(
        HeadLimits(
            max_bytes=settings.max_header_bytes,
            max_headers=settings.max_headers,
            timeout_s=settings.header_timeout_seconds,
        )
    )
    config = uvicorn.Config(
        create_app(settings), host=host, port=port, log_level="warning", access_log=False, http=protocol
    )
    uvicorn.Server(config).run()

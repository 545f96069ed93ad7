from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import LiveServer


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The machine's real PostgreSQL. Under CI (MAAS_REQUIRE_POSTGRES=1) its absence fails, never skips."""
    url = os.environ.get("MAAS_TEST_POSTGRES_URL", "")
    required = os.environ.get("MAAS_REQUIRE_POSTGRES") == "1"
    if not url:
        if required:
            pytest.fail("MAAS_REQUIRE_POSTGRES=1 but MAAS_TEST_POSTGRES_URL is not set")
        pytest.skip("MAAS_TEST_POSTGRES_URL not set")
    from sqlalchemy import create_engine, text

    try:
        engine = create_engine(url)
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        if required:
            pytest.fail(f"PostgreSQL at {url} is required but unreachable: {exc}")
        pytest.skip(f"PostgreSQL unreachable: {exc}")
    return url


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One real platform process shared by the end-to-end tests."""
    live = LiveServer(
        Path(tmp_path_factory.mktemp("maas-home")),
        env={
            "MAAS_AUTH_CACHE_TTL_SECONDS": "1",
            "MAAS_MAX_UPLOAD_BYTES": str(2 * 1024 * 1024),
            "MAAS_MAX_REQUEST_BYTES": str(1024 * 1024),
            "MAAS_MAX_BATCH_INSTANCES": "256",
        },
    ).start()
    yield live
    live.stop()

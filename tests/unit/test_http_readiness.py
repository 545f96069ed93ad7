"""/readyz tells anyone whether the database answers, never what its driver said (issue 8)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine

from maas.api.app import create_app
from maas.config import Settings


def test_a_database_failure_is_a_generic_503_and_the_detail_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(Settings(home=tmp_path, shipped_models="none"), run_jobs=False)
    with TestClient(app) as client:
        assert client.get("/readyz").json() == {"status": "ready"}
        state = app.state.maas
        good = state.engine
        # A database that does not answer; its URL names a host, a user and a password.
        state.engine = create_engine("postgresql+psycopg://maas:hunter2@127.0.0.1:1/tenants?connect_timeout=2")
        try:
            with caplog.at_level(logging.WARNING, logger="maas.api"):
                response = client.get("/readyz")
        finally:
            state.engine.dispose()
            state.engine = good
    assert response.status_code == 503
    # It was the driver's text: "connection to server at "127.0.0.1", port 1 failed: Connection refused ...".
    assert response.json() == {"status": "unavailable", "detail": "database unavailable"}
    (logged,) = [record for record in caplog.records if record.name == "maas.api"]
    assert "127.0.0.1" in logged.getMessage()  # the detail, for the operator

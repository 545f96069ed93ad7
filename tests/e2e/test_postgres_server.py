"""The whole platform on PostgreSQL: `MAAS_DATABASE_URL` is all it takes to leave SQLite behind.

The server, its migrations and its worker subprocesses all run against a fresh database on the machine's
real PostgreSQL; the test drives them over HTTP like any user.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.harness import LiveServer, breast_cancer_frame, csv_bytes, new_tenant

pytestmark = pytest.mark.postgres


@pytest.fixture
def postgres_database(postgres_url: str) -> Iterator[str]:
    name = f"maas_e2e_{secrets.token_hex(4)}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_lifecycle_on_postgresql(tmp_path: Path, postgres_database: str) -> None:
    server = LiveServer(tmp_path / "home", env={"MAAS_DATABASE_URL": postgres_database}).start()
    try:
        client = server.client(new_tenant(server, "on-postgres")["key"])
        frame = breast_cancer_frame()
        dataset = client.upload_dataset_bytes(csv_bytes(frame), "cancer.csv", name="cancer")
        job = client.wait_for_job(client.train(dataset["id"], "target", hyperparameters={"epochs": 5})["id"], 300)
        assert job["state"] == "succeeded", job
        client.create_endpoint("cancer", job["result"]["model"])
        answer = client.predict("cancer", frame.drop(columns="target").head(2).to_dict(orient="records"))
        assert answer["version"] == 1 and len(answer["predictions"]) == 2
    finally:
        server.stop()
    # Everything landed in PostgreSQL, nothing in a stray SQLite file.
    assert not (tmp_path / "home" / "maas.db").exists()
    engine = create_engine(postgres_database)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM model_versions")).scalar_one() == 1
        assert connection.execute(text("SELECT state FROM jobs")).scalar_one() == "succeeded"
    engine.dispose()

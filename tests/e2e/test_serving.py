"""Serving and operations against a real server: version switches under load, SSE, usage, metrics."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sklearn.datasets import load_diabetes

from maas.client import Client, MaasAPIError
from tests.harness import LiveServer, breast_cancer_frame, csv_bytes, new_tenant

QUICK = {"epochs": 5}


@pytest.fixture(scope="module")
def two_versions(server: LiveServer) -> dict[str, Any]:
    """A model with versions 1 and 2, trained on the breast-cancer table, in a tenant of its own."""
    tenant = new_tenant(server, "serving")
    client = server.client(tenant["key"])
    frame = breast_cancer_frame()
    dataset = client.upload_dataset_bytes(csv_bytes(frame), "cancer.csv", name="cancer")
    jobs = [client.train(dataset["id"], "target", model_name="switcher", hyperparameters=QUICK) for _ in range(2)]
    finished = [client.wait_for_job(job["id"], timeout=300) for job in jobs]
    assert [job["state"] for job in finished] == ["succeeded", "succeeded"], finished
    rows = frame.drop(columns="target").head(3).to_dict(orient="records")
    return {"client": client, "tenant": tenant, "rows": rows, "jobs": finished}


def _predict_once(two_versions: dict[str, Any]) -> None:
    client: Client = two_versions["client"]
    if "probe" not in {e["name"] for e in client.list_endpoints()}:
        client.create_endpoint("probe", "switcher", version=1)
    client.predict("probe", two_versions["rows"])


def test_switching_versions_under_load_drops_no_request(server: LiveServer, two_versions: dict[str, Any]) -> None:
    client: Client = two_versions["client"]
    client.set_alias("switcher", "production", 1)
    client.create_endpoint("switching", "switcher", alias="production")
    body = json.dumps({"instances": two_versions["rows"]})
    headers = {"Authorization": f"Bearer {two_versions['tenant']['key']}", "Content-Type": "application/json"}
    statuses: list[int] = []
    versions: list[int] = []
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as http:
            while not stop.is_set():
                response = http.post("/api/v1/endpoints/switching/predict", content=body)
                statuses.append(response.status_code)
                if response.status_code == 200:
                    versions.append(response.json()["version"])

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        client.set_alias("switcher", "production", 2)  # the alias moves: the endpoint follows it
        time.sleep(1.0)
        client.update_endpoint("switching", version=1)  # and a pin back to version 1
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert len(statuses) > 50
    assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    assert set(versions) == {1, 2}
    # Once switched back, the very next answers come from version 1 (this process drops its routes at once).
    assert client.predict("switching", two_versions["rows"])["version"] == 1


def test_job_events_stream_over_sse_until_the_job_ends(two_versions: dict[str, Any]) -> None:
    client: Client = two_versions["client"]
    job = client.train(
        two_versions["jobs"][0]["spec"]["dataset_id"], "target", model_name="streamed", hyperparameters=QUICK
    )
    events = list(client.stream_job_events(job["id"]))
    epochs = [e["payload"]["epoch"] for e in events if e["kind"] == "epoch"]
    assert epochs == list(range(1, QUICK["epochs"] + 1))
    assert events[-1]["kind"] == "state" and events[-1]["payload"]["state"] == "succeeded"
    ids = [e["id"] for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    # Resuming with Last-Event-ID replays only what came after it.
    resumed = client._http.get(
        f"/api/v1/jobs/{job['id']}/events",
        headers={"Accept": "text/event-stream", "Last-Event-ID": str(ids[-3])},
    )
    assert resumed.headers["content-type"].startswith("text/event-stream")
    replayed = [json.loads(line[6:])["id"] for line in resumed.text.splitlines() if line.startswith("data: ")]
    assert replayed == ids[-2:]
    # JSON pages: ?limit= and ?after= walk the same sequence.
    first = client._http.get(f"/api/v1/jobs/{job['id']}/events", params={"limit": 2}).json()
    second = client._http.get(f"/api/v1/jobs/{job['id']}/events", params={"limit": 2, "after": first[-1]["id"]}).json()
    assert [e["id"] for e in first + second] == ids[:4]


def test_regression_endpoint_answers_numbers(two_versions: dict[str, Any]) -> None:
    client: Client = two_versions["client"]
    frame = load_diabetes(as_frame=True).frame
    dataset = client.upload_dataset_bytes(csv_bytes(frame), "diabetes.csv", name="diabetes")
    job = client.train(dataset["id"], "target", model_name="diabetes", hyperparameters={"epochs": 30})
    finished = client.wait_for_job(job["id"], timeout=300)
    assert finished["state"] == "succeeded", finished
    assert finished["spec"]["task"] == "regression"
    version = client.get_model_version("diabetes", 1)
    assert {"rmse", "mae", "r2"} <= set(version["metrics"])
    client.create_endpoint("diabetes", "diabetes")
    rows = frame.drop(columns="target").head(4).to_dict(orient="records")
    answer = client.predict("diabetes", rows)
    assert len(answer["predictions"]) == 4
    assert all(isinstance(p, float) for p in answer["predictions"])
    # Predictions are in the target's units (25-346 in this data set), not standardised values.
    assert all(0 < p < 400 for p in answer["predictions"])
    assert "probabilities" not in answer or answer["probabilities"] is None


def _deploy_small_model(client: Client, endpoint: str, rows: int) -> list[dict[str, Any]]:
    """Train a quick model on 100 breast-cancer rows behind ``endpoint``; returns ``rows`` rows to send."""
    frame = breast_cancer_frame().head(100)
    dataset = client.upload_dataset_bytes(csv_bytes(frame), f"{endpoint}.csv", name=endpoint)
    job = client.wait_for_job(client.train(dataset["id"], "target", hyperparameters=QUICK)["id"], timeout=300)
    client.create_endpoint(endpoint, job["result"]["model"])
    return [{str(k): v for k, v in row.items()} for row in frame.drop(columns="target").head(rows).to_dict("records")]


def test_usage_meters_predictions_and_training_seconds(server: LiveServer) -> None:
    client = server.client(new_tenant(server, "metered")["key"])
    rows = _deploy_small_model(client, "metered", rows=7)
    for _ in range(3):
        client.predict("metered", rows)
    totals = client.usage()["totals"]
    assert totals["predictions"] == 21
    assert totals["training_compute_seconds"] > 0
    # Another tenant's usage is its own.
    other = server.client(new_tenant(server, "unmetered")["key"])
    assert other.usage()["totals"].get("predictions", 0) == 0


def test_health_readiness_and_prometheus_metrics(server: LiveServer, two_versions: dict[str, Any]) -> None:
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{server.url}/readyz").json() == {"status": "ready"}
    _predict_once(two_versions)
    # The metrics name tenants and their endpoints: only the platform admin may read them.
    assert httpx.get(f"{server.url}/metrics").status_code == 401
    tenant_key = {"Authorization": f"Bearer {two_versions['tenant']['key']}"}
    assert httpx.get(f"{server.url}/metrics", headers=tenant_key).status_code == 403
    text = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {server.admin_key}"}).text
    assert 'maas_http_requests_total{method="POST",route="/api/v1/endpoints/{name}/predict",status="200"}' in text
    assert "maas_predict_latency_seconds_bucket" in text


def test_every_response_carries_a_request_id(server: LiveServer) -> None:
    echoed = httpx.get(f"{server.url}/healthz", headers={"X-Request-ID": "trace-123"})
    assert echoed.headers["x-request-id"] == "trace-123"
    assigned = httpx.get(f"{server.url}/api/v1/models")
    assert assigned.status_code == 401 and len(assigned.headers["x-request-id"]) == 32


def test_the_api_process_never_loads_torch(server: LiveServer, two_versions: dict[str, Any]) -> None:
    _predict_once(two_versions)  # the predict path has run
    assert server.process is not None
    maps = Path(f"/proc/{server.process.pid}/maps").read_text()
    assert "libtorch" not in maps


def test_admin_key_file_is_private(server: LiveServer) -> None:
    mode = os.stat(server.home / "admin.key").st_mode & 0o777
    assert mode == 0o600
    assert server.admin_key.startswith("maas_sk_")


def test_metered_usage_survives_a_graceful_restart(tmp_path: Path) -> None:
    """Predictions are counted in memory and flushed in batches; a clean stop flushes what is pending."""
    home = tmp_path / "home"
    server = LiveServer(home).start()
    try:
        key = new_tenant(server, "billed")["key"]
        client = server.client(key)
        rows = _deploy_small_model(client, "billed", rows=4)
        for _ in range(5):
            client.predict("billed", rows)
    finally:
        server.stop()  # SIGTERM well inside the flush interval: the counts are still only in memory
    restarted = LiveServer(home).start()
    try:
        assert restarted.client(key).usage()["totals"]["predictions"] == 20
    finally:
        restarted.stop()


def test_openapi_documents_bearer_auth_and_problem_errors(server: LiveServer) -> None:
    spec = httpx.get(f"{server.url}/openapi.json").json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    predict = spec["paths"]["/api/v1/endpoints/{name}/predict"]["post"]
    assert predict["security"] == [{"HTTPBearer": []}]
    for status in ("401", "404", "422"):
        schema = predict["responses"][status]["content"]["application/problem+json"]["schema"]
        assert {"title", "status", "detail", "errors"} <= set(schema["properties"])
    assert "/docs" not in spec["paths"] and httpx.get(f"{server.url}/docs").status_code == 200


def test_a_tenant_cannot_queue_more_jobs_than_its_limit(tmp_path: Path) -> None:
    server = LiveServer(tmp_path / "home", env={"MAAS_MAX_ACTIVE_JOBS_PER_TENANT": "2"}).start()
    try:
        clients = [server.client(new_tenant(server, name)["key"]) for name in ("greedy", "patient")]
        datasets = [c.upload_dataset_bytes(csv_bytes(breast_cancer_frame()), "d.csv", name="d") for c in clients]
        greedy, patient = clients
        slow = {"epochs": 1000, "early_stopping_patience": 0}
        queued = [greedy.train(datasets[0]["id"], "target", hyperparameters=slow) for _ in range(2)]
        with pytest.raises(MaasAPIError) as refused:
            greedy.train(datasets[0]["id"], "target", hyperparameters=slow)
        assert refused.value.status == 429 and "MAAS_MAX_ACTIVE_JOBS_PER_TENANT" in refused.value.problem["detail"]
        # Another tenant is not affected, and a cancelled job frees a place.
        patient.cancel_job(patient.train(datasets[1]["id"], "target", hyperparameters=slow)["id"])
        greedy.cancel_job(queued[0]["id"])
        greedy.wait_for_job(queued[0]["id"], timeout=60)
        greedy.cancel_job(greedy.train(datasets[0]["id"], "target", hyperparameters=slow)["id"])
        greedy.cancel_job(queued[1]["id"])
    finally:
        server.stop()

"""The whole lifecycle over HTTP against a real server process: the path a user takes."""

from __future__ import annotations

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from maas.client import Client, MaasAPIError
from tests.harness import LiveServer, breast_cancer_frame, csv_bytes, new_tenant


@pytest.fixture(scope="module")
def trained(server: LiveServer) -> dict[str, object]:
    tenant = new_tenant(server, "lifecycle")
    client = server.client(tenant["key"])
    frame = breast_cancer_frame()
    dataset = client.upload_dataset_bytes(csv_bytes(frame), "breast_cancer.csv", name="cancer")
    job = client.train(dataset["id"], "target", model_name="cancer", hyperparameters={"epochs": 60})
    finished = client.wait_for_job(job["id"], timeout=300)
    assert finished["state"] == "succeeded", finished
    return {"client": client, "dataset": dataset, "job": finished, "frame": frame, "tenant": tenant}


def test_dataset_profile_records_types_and_stats(trained: dict[str, object]) -> None:
    dataset = trained["dataset"]
    assert isinstance(dataset, dict)
    assert dataset["row_count"] == 569 and dataset["version"] == 1
    columns = {c["name"]: c for c in dataset["columns"]}
    assert columns["mean radius"]["type"] == "numeric"
    assert columns["target"]["type"] in ("categorical", "boolean")
    assert len(dataset["digest"]) == 64


def test_job_emits_epoch_events_and_registers_a_version(trained: dict[str, object]) -> None:
    client = trained["client"]
    job = trained["job"]
    assert isinstance(client, Client) and isinstance(job, dict)
    events = client.job_events(job["id"])
    epochs = [e["payload"] for e in events if e["kind"] == "epoch"]
    assert epochs and {"train_loss", "val_loss", "progress", "eta_seconds"} <= set(epochs[0])
    version = client.get_model_version("cancer", job["result"]["version"])
    assert version["metrics"]["accuracy"] >= 0.9
    assert version["lineage"]["dataset_id"] == trained["dataset"]["id"]  # type: ignore[index]
    assert version["lineage"]["job_id"] == job["id"]


def test_predict_returns_labels_probabilities_and_version(trained: dict[str, object]) -> None:
    client = trained["client"]
    frame = trained["frame"]
    assert isinstance(client, Client)
    client.create_endpoint("cancer", "cancer", alias="latest")
    rows = frame.drop(columns="target").head(5).to_dict(orient="records")  # type: ignore[union-attr]
    answer = client.predict("cancer", rows)
    assert answer["model"] == "cancer" and answer["version"] == 1
    assert len(answer["predictions"]) == 5
    assert set(answer["predictions"]) <= {"benign", "malignant"}
    for probabilities in answer["probabilities"]:
        assert abs(sum(probabilities.values()) - 1) < 1e-4
    truth = frame["target"].head(5).tolist()  # type: ignore[index]
    assert sum(p == t for p, t in zip(answer["predictions"], truth, strict=True)) >= 4


def test_downloaded_onnx_runs_in_onnxruntime(trained: dict[str, object]) -> None:
    client = trained["client"]
    assert isinstance(client, Client)
    blob = client.download_model("cancer", 1)
    session = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    n_features = session.get_inputs()[0].shape[1]
    (out,) = session.run(None, {"features": np.zeros((3, n_features), dtype=np.float32)})
    assert out.shape == (3, 2)


def test_consumer_key_predicts_but_cannot_train(server: LiveServer, trained: dict[str, object]) -> None:
    client = trained["client"]
    assert isinstance(client, Client)
    consumer = client.create_key("app", role="consumer")
    with server.client(consumer["key"]) as app:
        row = trained["frame"].drop(columns="target").head(1).to_dict(orient="records")  # type: ignore[union-attr]
        assert app.predict("cancer", row)["predictions"]
        with pytest.raises(MaasAPIError) as denied:
            app.train(trained["dataset"]["id"], "target")  # type: ignore[index]
        assert denied.value.status == 403


def test_revoked_key_is_refused_within_five_seconds(server: LiveServer, trained: dict[str, object]) -> None:
    client = trained["client"]
    assert isinstance(client, Client)
    issued = client.create_key("short-lived", role="consumer")
    headers = {"Authorization": f"Bearer {issued['key']}"}
    assert httpx.get(f"{server.url}/api/v1/families", headers=headers).status_code == 200
    client.revoke_key(issued["id"])
    response = httpx.get(f"{server.url}/api/v1/families", headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")


def test_another_tenants_ids_answer_404_like_missing_ones(server: LiveServer, trained: dict[str, object]) -> None:
    other = new_tenant(server, "intruder")
    dataset_id = trained["dataset"]["id"]  # type: ignore[index]
    job_id = trained["job"]["id"]  # type: ignore[index]
    with server.client(other["key"]) as intruder:
        for call in (
            lambda: intruder.get_dataset(dataset_id),
            lambda: intruder.get_job(job_id),
            lambda: intruder.get_model("cancer"),
            lambda: intruder.predict("cancer", [{"a": 1}]),
            lambda: intruder.get_dataset("ds_doesnotexist"),
        ):
            with pytest.raises(MaasAPIError) as missing:
                call()
            assert missing.value.status == 404


def test_switching_version_changes_the_answering_version(trained: dict[str, object]) -> None:
    client = trained["client"]
    assert isinstance(client, Client)
    dataset = trained["dataset"]
    job = client.train(dataset["id"], "target", model_name="cancer", hyperparameters={"epochs": 5})  # type: ignore[index]
    assert client.wait_for_job(job["id"], timeout=300)["state"] == "succeeded"
    client.create_endpoint("pinned", "cancer", version=1)
    row = trained["frame"].drop(columns="target").head(1).to_dict(orient="records")  # type: ignore[union-attr]
    assert client.predict("pinned", row)["version"] == 1
    client.update_endpoint("pinned", version=2)
    assert client.predict("pinned", row)["version"] == 2
    client.set_alias("cancer", "production", 1)
    client.update_endpoint("pinned", alias="production")
    assert client.predict("pinned", row)["version"] == 1

"""A model version's artifact downloads under the name of its real format (ONNX or safetensors)."""

from __future__ import annotations

import httpx
from safetensors.numpy import load

from tests.e2e.test_recommender_lifecycle import interactions
from tests.harness import LiveServer, new_tenant


def test_a_safetensors_artifact_is_named_safetensors_and_loads(server: LiveServer) -> None:
    key = new_tenant(server, "artifact-download")["key"]
    client = server.client(key)
    content = interactions(n_users=30, n_items=20, per_user=8).drop(columns=["genre"]).to_csv(index=False).encode()
    dataset = client.upload_dataset_bytes(content, "ratings.csv", name="ratings")
    job = client.train(dataset["id"], family="recommender-mf", model_name="recs", hyperparameters={"epochs": 2})
    assert client.wait_for_job(job["id"])["state"] == "succeeded"
    response = httpx.get(
        f"{server.url}/api/v1/models/recs/versions/1/artifact", headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200
    assert response.headers["content-disposition"] == 'attachment; filename="recs-v1.safetensors"'
    assert load(response.content)  # real safetensors tensors, not mislabelled bytes

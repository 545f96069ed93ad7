"""Bad input over HTTP against a real server: every refusal is problem+json naming what to fix, and creates nothing."""

from __future__ import annotations

import http.client
import io
import re
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.harness import LiveServer, csv_bytes, new_tenant

UPLOAD_LIMIT = 2 * 1024 * 1024  # MAAS_MAX_UPLOAD_BYTES in the session fixture
BATCH_LIMIT = 256  # MAAS_MAX_BATCH_INSTANCES in the session fixture
MODEL = "badinput"
ENDPOINT = "badinput"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def api(server: LiveServer, key: str | None = None) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers=auth(key) if key else {}, timeout=60)


def problem(response: httpx.Response, status: int, *named: str) -> dict[str, Any]:
    """Assert ``status`` and a problem+json body whose detail mentions each of ``named`` (case-insensitive)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body = response.json()
    assert body["status"] == status and body["title"], body
    detail = body["detail"]
    assert isinstance(detail, str) and detail, body
    for word in named:
        assert word.lower() in detail.lower(), f"{word!r} not named in detail: {detail!r}"
    return body


def small_frame(rows: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    num = rng.normal(size=rows)
    color = rng.choice(["red", "green", "blue"], size=rows)
    label = np.where(num + (color == "red") > 0.3, "spam", "ham")
    return pd.DataFrame({"num": num, "color": color, "label": label})


def dataset_ids(client: httpx.Client) -> set[str]:
    response = client.get("/api/v1/datasets")
    assert response.status_code == 200, response.text
    return {d["id"] for d in response.json()}


def job_ids(client: httpx.Client) -> set[str]:
    response = client.get("/api/v1/jobs")
    assert response.status_code == 200, response.text
    return {j["id"] for j in response.json()}


def upload(client: httpx.Client, content: bytes, filename: str, name: str | None = None) -> httpx.Response:
    data = {"name": name} if name else {}
    return client.post("/api/v1/datasets", files={"file": (filename, content)}, data=data)


@pytest.fixture(scope="module")
def owner(server: LiveServer) -> Iterator[dict[str, Any]]:
    """A tenant with a dataset, a small trained model (epochs 3) and an endpoint."""
    tenant = new_tenant(server, unique("badinput-owner"))
    client = api(server, tenant["key"])
    created = upload(client, csv_bytes(small_frame()), "small.csv", name="small")
    assert created.status_code == 201, created.text
    dataset = created.json()
    job = client.post(
        "/api/v1/jobs",
        json={"dataset_id": dataset["id"], "target": "label", "model_name": MODEL, "hyperparameters": {"epochs": 3}},
    )
    assert job.status_code == 201, job.text
    deadline = time.monotonic() + 300
    while True:
        state = client.get(f"/api/v1/jobs/{job.json()['id']}").json()
        if state["state"] in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert state["state"] == "succeeded", state
    endpoint = client.post("/api/v1/endpoints", json={"name": ENDPOINT, "model": MODEL})
    assert endpoint.status_code == 201, endpoint.text
    yield {"tenant": tenant, "client": client, "dataset": dataset, "job": state}
    client.close()


@pytest.fixture()
def fresh(server: LiveServer) -> Iterator[httpx.Client]:
    """A new tenant with nothing in it, so 'nothing was created' is an exact check."""
    tenant = new_tenant(server, unique("badinput"))
    with api(server, tenant["key"]) as client:
        yield client


# --- dataset upload --------------------------------------------------------------------------------------


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


TRUNCATED_PARQUET = _parquet(pd.DataFrame({"a": range(100), "b": ["x"] * 100}))[:-40]
EMPTY_PARQUET = _parquet(pd.DataFrame({"a": pd.Series([], dtype="int64"), "b": pd.Series([], dtype="str")}))
PNG_BYTES = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"


@pytest.mark.parametrize(
    ("content", "filename", "named"),
    [
        pytest.param(b"", "data.csv", ["empty"], id="empty-file"),
        pytest.param(b"   \n\n", "data.csv", ["empty"], id="whitespace-only"),
        pytest.param(PNG_BYTES, "data.csv", ["binary"], id="png-as-csv"),
        pytest.param(bytes(range(256)) * 8, "data.csv", ["binary"], id="random-bytes-with-nul"),
        pytest.param(b"a,b,c\n1,2,3\n4,5\n6,7,8\n", "data.csv", ["line 3"], id="ragged-short-row"),
        pytest.param(b"a,b\n1,2\n3,4\n5,6,7\n", "data.csv", ["line 4"], id="ragged-long-row"),
        pytest.param(b"a,b,a\n1,2,3\n", "data.csv", ["'a'"], id="duplicate-columns"),
        pytest.param(b"a,b,c\n", "data.csv", ["no data rows"], id="header-only"),
        pytest.param(b"PAR1" + bytes(range(256)) * 4 + b"PAR1", "data.parquet", ["parquet"], id="corrupt-parquet"),
        pytest.param(b"PAR1garbage", "data.csv", ["parquet"], id="parquet-magic-named-csv"),
        pytest.param(TRUNCATED_PARQUET, "data.parquet", ["parquet"], id="truncated-parquet"),
        pytest.param(EMPTY_PARQUET, "data.parquet", ["no data rows"], id="parquet-zero-rows"),
        pytest.param(b"not parquet at all", "data.parquet", ["parquet"], id="parquet-name-without-magic"),
        pytest.param(b"a,b,c", "data.csv", ["no data rows"], id="header-only-no-newline"),
        pytest.param(b"a,b\n1,caf\xe9\n", "data.csv", ["utf-8", "line 2"], id="latin1-not-utf8"),
        pytest.param(b"a,,c\n1,2,3\n", "data.csv", ["column 2"], id="empty-column-name"),
        pytest.param(b'a,b\n1,"open\n2,3\n', "data.csv", ["line 2"], id="unterminated-quote"),
        pytest.param(b'a,b\n1,"x\ny"\n3,4,5\n', "data.csv", ["line 4"], id="ragged-after-multiline-field"),
    ],
)
def test_bad_upload_is_422_naming_the_problem_and_creates_nothing(
    fresh: httpx.Client, content: bytes, filename: str, named: list[str]
) -> None:
    before = dataset_ids(fresh)
    problem(upload(fresh, content, filename), 422, *named)
    assert dataset_ids(fresh) == before == set()


def test_upload_just_over_the_limit_is_413_naming_the_limit(fresh: httpx.Client) -> None:
    header = b"a,b\n"
    row = b"1,2\n"
    content = header + row * ((UPLOAD_LIMIT - len(header)) // len(row) + 1)
    assert UPLOAD_LIMIT < len(content) < UPLOAD_LIMIT + 16
    problem(upload(fresh, content, "big.csv"), 413, str(UPLOAD_LIMIT))
    assert dataset_ids(fresh) == set()


def test_upload_exactly_at_the_limit_is_accepted(fresh: httpx.Client) -> None:
    header = b"a,b\n"
    row = b"1,2\n"
    content = header + row * ((UPLOAD_LIMIT - len(header)) // len(row))
    assert len(content) == UPLOAD_LIMIT
    response = upload(fresh, content, "edge.csv")
    assert response.status_code == 201, response.text


def test_declared_huge_content_length_is_413_before_the_body(server: LiveServer, fresh: httpx.Client) -> None:
    key = fresh.headers["Authorization"]
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.putrequest("POST", "/api/v1/datasets")
        connection.putheader("Authorization", key)
        connection.putheader("Content-Type", "multipart/form-data; boundary=xyz")
        connection.putheader("Content-Length", str(50 * 1024**3))
        connection.endheaders()  # no body is ever sent: the answer must not wait for it
        response = connection.getresponse()
        status, content_type, raw = response.status, response.getheader("content-type", ""), response.read()
    finally:
        connection.close()
    assert status == 413, raw
    assert content_type.startswith("application/problem+json")
    detail = httpx.Response(413, content=raw).json()["detail"]
    # The number named must be the configured MAAS_MAX_UPLOAD_BYTES, not an internal allowance on top of it.
    assert str(UPLOAD_LIMIT) in detail and "MAAS_MAX_UPLOAD_BYTES" in detail, detail
    assert dataset_ids(fresh) == set()


def test_path_like_filename_is_only_a_display_name(server: LiveServer, fresh: httpx.Client) -> None:
    outside = [server.home.parent / "etc", server.home.parent.parent / "etc"]
    existed = {path: path.exists() for path in outside}
    response = upload(fresh, b"a,b\n1,2\n3,4\n", "../../etc/passwd.csv")
    assert response.status_code == 201, response.text
    body = response.json()
    assert "/" not in body["original_filename"] and "\\" not in body["original_filename"]
    assert body["original_filename"] == "passwd.csv"
    assert "/" not in body["name"] and ".." not in body["name"]
    for path, was in existed.items():
        assert path.exists() == was, path
    assert not any(p.name == "passwd.csv" for p in server.home.parent.rglob("passwd.csv"))


# --- jobs ----------------------------------------------------------------------------------------------


def _submit(client: httpx.Client, dataset_id: str, **fields: Any) -> httpx.Response:
    return client.post("/api/v1/jobs", json={"dataset_id": dataset_id, "target": "label", **fields})


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        pytest.param({"target": "no_such_column"}, ["no_such_column"], id="unknown-target"),
        pytest.param({"hyperparameters": {"learning_rate": -1}}, ["learning_rate"], id="negative-learning-rate"),
        pytest.param({"hyperparameters": {"epochs": 0}}, ["epochs"], id="zero-epochs"),
        pytest.param({"hyperparameters": {"lerning_rate": 0.1}}, ["lerning_rate"], id="unknown-hyperparameter"),
        pytest.param({"family": "no-such-family"}, ["family", "no-such-family"], id="unknown-family"),
    ],
)
def test_bad_job_is_422_naming_the_field_and_queues_nothing(
    owner: dict[str, Any], fields: dict[str, Any], named: list[str]
) -> None:
    client = owner["client"]
    before = job_ids(client)
    problem(_submit(client, owner["dataset"]["id"], **fields), 422, *named)
    assert job_ids(client) == before


def test_single_class_target_is_422(fresh: httpx.Client) -> None:
    frame = pd.DataFrame({"x": range(50), "label": ["only"] * 50})
    created = upload(fresh, csv_bytes(frame), "one.csv")
    assert created.status_code == 201, created.text
    problem(_submit(fresh, created.json()["id"]), 422, "label", "class")
    assert job_ids(fresh) == set()


def test_another_tenants_dataset_is_404_like_a_missing_one(owner: dict[str, Any], fresh: httpx.Client) -> None:
    theirs = problem(_submit(fresh, owner["dataset"]["id"]), 404)
    made_up = problem(_submit(fresh, "ds_doesnotexist"), 404)
    assert theirs["title"] == made_up["title"]
    assert job_ids(fresh) == set()


# --- predict -------------------------------------------------------------------------------------------


def _predict(client: httpx.Client, body: Any = None, **kwargs: Any) -> httpx.Response:
    if body is not None:
        kwargs["json"] = body
    return client.post(f"/api/v1/endpoints/{ENDPOINT}/predict", **kwargs)


GOOD = {"num": 0.5, "color": "red"}


def test_predict_good_rows_answer(owner: dict[str, Any]) -> None:
    response = _predict(owner["client"], {"instances": [GOOD, {"num": -1.0, "color": "blue"}]})
    assert response.status_code == 200, response.text
    assert set(response.json()["predictions"]) <= {"spam", "ham"}


def test_predict_missing_column_names_column_and_row(owner: dict[str, Any]) -> None:
    body = problem(_predict(owner["client"], {"instances": [GOOD, {"color": "red"}]}), 422, "num")
    assert re.search(r"\b1\b", body["detail"]), body["detail"]


def test_predict_wrong_type_names_column_and_row(owner: dict[str, Any]) -> None:
    instances = [GOOD, GOOD, {"num": "abc", "color": "green"}]
    body = problem(_predict(owner["client"], {"instances": instances}), 422, "num")
    assert re.search(r"\b2\b", body["detail"]), body["detail"]


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        pytest.param(b'{"instances": [{"num": [1], "color": "red"}]}', ["num"], id="list-for-number"),
        pytest.param(b'{"instances": [{"num": 1, "color": {"x": 1}}]}', ["color"], id="object-for-category"),
        pytest.param(b'{"instances": [{"num": 1e400, "color": "red"}]}', ["num"], id="infinite-number"),
        pytest.param(b'{"instances": [{"num": Infinity, "color": "red"}]}', ["num"], id="Infinity-literal"),
        pytest.param(b'{"instances": [{"num": 1e300, "color": "red"}]}', ["num"], id="absurdly-large-number"),
        pytest.param(b'{"instances": [{"num": 1' + b"0" * 400 + b', "color": "red"}]}', ["num"], id="huge-integer"),
    ],
)
def test_predict_unusable_value_is_422_naming_the_column(owner: dict[str, Any], raw: bytes, named: list[str]) -> None:
    response = _predict(owner["client"], content=raw, headers={"Content-Type": "application/json"})
    body = problem(response, 422, *named)
    assert re.search(r"\b0\b", body["detail"]), body["detail"]


def test_predict_large_but_sane_number_answers(owner: dict[str, Any]) -> None:
    response = _predict(owner["client"], {"instances": [{"num": 1e6, "color": "red"}, {"num": None, "color": None}]})
    assert response.status_code == 200, response.text


def test_predict_unseen_category_is_not_an_error(owner: dict[str, Any]) -> None:
    response = _predict(owner["client"], {"instances": [{"num": 0.1, "color": "ultraviolet"}]})
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 1


def test_predict_empty_instances_is_422(owner: dict[str, Any]) -> None:
    problem(_predict(owner["client"], {"instances": []}), 422, "instances")


def test_predict_over_the_batch_limit_names_the_limit(owner: dict[str, Any]) -> None:
    response = _predict(owner["client"], {"instances": [GOOD] * (BATCH_LIMIT + 1)})
    assert response.status_code in (413, 422), response.text
    problem(response, response.status_code, str(BATCH_LIMIT))
    at_limit = _predict(owner["client"], {"instances": [GOOD] * BATCH_LIMIT})
    assert at_limit.status_code == 200, at_limit.text


def test_predict_body_not_json_is_422(owner: dict[str, Any]) -> None:
    response = _predict(owner["client"], content=b"{not json", headers={"Content-Type": "application/json"})
    problem(response, 422)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"instances": {"num": 1, "color": "red"}}, id="object"),
        pytest.param({"instances": "num=1"}, id="string"),
        pytest.param({"instances": [1, 2]}, id="list-of-numbers"),
        pytest.param({"rows": [GOOD]}, id="missing-key"),
    ],
)
def test_predict_instances_not_a_list_of_objects_is_422(owner: dict[str, Any], body: Any) -> None:
    problem(_predict(owner["client"], body), 422, "instances")


def test_predict_with_an_option_the_model_does_not_take_is_422(owner: dict[str, Any]) -> None:
    """A misspelt or misplaced option (``top_k`` is for image models) is refused, not silently ignored."""
    problem(_predict(owner["client"], {"instances": [GOOD], "parameters": {"top_k": 3}}), 422, "top_k", "takes none")


# --- auth ----------------------------------------------------------------------------------------------


def test_no_authorization_header_is_401(server: LiveServer) -> None:
    with api(server) as anonymous:
        problem(anonymous.get("/api/v1/datasets"), 401)


def test_garbage_key_is_401(server: LiveServer) -> None:
    with api(server, "maas_not-a-real-key") as garbage:
        problem(garbage.get("/api/v1/datasets"), 401)


def test_revoked_key_is_refused_within_five_seconds(server: LiveServer, fresh: httpx.Client) -> None:
    issued = fresh.post("/api/v1/keys", json={"name": "short", "role": "developer"})
    assert issued.status_code == 201, issued.text
    with api(server, issued.json()["key"]) as doomed:
        assert doomed.get("/api/v1/datasets").status_code == 200
        revoked = fresh.delete(f"/api/v1/keys/{issued.json()['id']}")
        assert revoked.status_code == 200, revoked.text
        deadline = time.monotonic() + 5
        response = doomed.get("/api/v1/datasets")
        while response.status_code != 401 and time.monotonic() < deadline:
            time.sleep(0.1)
            response = doomed.get("/api/v1/datasets")
        problem(response, 401)


def test_consumer_key_cannot_train_or_upload(server: LiveServer, owner: dict[str, Any]) -> None:
    client = owner["client"]
    issued = client.post("/api/v1/keys", json={"name": "app", "role": "consumer"})
    assert issued.status_code == 201, issued.text
    datasets_before, jobs_before = dataset_ids(client), job_ids(client)
    with api(server, issued.json()["key"]) as consumer:
        problem(_submit(consumer, owner["dataset"]["id"]), 403, "developer")
        problem(upload(consumer, b"a,b\n1,2\n", "c.csv"), 403, "developer")
        assert _predict(consumer, {"instances": [GOOD]}).status_code == 200
    assert dataset_ids(client) == datasets_before
    assert job_ids(client) == jobs_before


def test_admin_key_on_tenant_routes_is_403(server: LiveServer) -> None:
    with api(server, server.admin_key) as admin:
        problem(admin.get("/api/v1/datasets"), 403)
        problem(admin.post("/api/v1/jobs", json={"dataset_id": "ds_x", "target": "y"}), 403)


def test_developer_key_cannot_create_tenants(server: LiveServer, fresh: httpx.Client) -> None:
    name = unique("sneaky")
    problem(fresh.post("/api/v1/tenants", json={"name": name}), 403, "admin")
    with api(server, server.admin_key) as admin:
        assert name not in {t["name"] for t in admin.get("/api/v1/tenants").json()}


# --- another tenant's ids answer exactly like made-up ones ----------------------------------------------


def test_another_tenants_resources_are_indistinguishable_from_missing(
    owner: dict[str, Any], fresh: httpx.Client
) -> None:
    dataset_id = owner["dataset"]["id"]
    job_id = owner["job"]["id"]
    key_id = owner["tenant"]["key_id"]
    calls: dict[str, tuple[tuple[str, str, dict[str, Any]], tuple[str, str, dict[str, Any]]]] = {
        "dataset": (("GET", f"/api/v1/datasets/{dataset_id}", {}), ("GET", "/api/v1/datasets/ds_madeup", {})),
        "dataset version": (
            ("GET", f"/api/v1/datasets/{dataset_id}/versions/1", {}),
            ("GET", "/api/v1/datasets/ds_madeup/versions/1", {}),
        ),
        "job": (("GET", f"/api/v1/jobs/{job_id}", {}), ("GET", "/api/v1/jobs/job_madeup", {})),
        "job events": (("GET", f"/api/v1/jobs/{job_id}/events", {}), ("GET", "/api/v1/jobs/job_madeup/events", {})),
        "job cancel": (("POST", f"/api/v1/jobs/{job_id}/cancel", {}), ("POST", "/api/v1/jobs/job_madeup/cancel", {})),
        "model": (("GET", f"/api/v1/models/{MODEL}", {}), ("GET", "/api/v1/models/madeup", {})),
        "model version artifact": (
            ("GET", f"/api/v1/models/{MODEL}/versions/1/artifact", {}),
            ("GET", "/api/v1/models/madeup/versions/1/artifact", {}),
        ),
        "endpoint": (("GET", f"/api/v1/endpoints/{ENDPOINT}", {}), ("GET", "/api/v1/endpoints/madeup", {})),
        "endpoint predict": (
            ("POST", f"/api/v1/endpoints/{ENDPOINT}/predict", {"json": {"instances": [GOOD]}}),
            ("POST", "/api/v1/endpoints/madeup/predict", {"json": {"instances": [GOOD]}}),
        ),
        "key revoke": (("DELETE", f"/api/v1/keys/{key_id}", {}), ("DELETE", "/api/v1/keys/key_madeup", {})),
        "dataset preview": (
            ("GET", f"/api/v1/datasets/{dataset_id}/preview", {}),
            ("GET", "/api/v1/datasets/ds_madeup/preview", {}),
        ),
        "dataset delete": (
            ("DELETE", f"/api/v1/datasets/{dataset_id}", {}),
            ("DELETE", "/api/v1/datasets/ds_madeup", {}),
        ),
        "train on their dataset": (
            ("POST", "/api/v1/jobs", {"json": {"dataset_id": dataset_id, "target": "target"}}),
            ("POST", "/api/v1/jobs", {"json": {"dataset_id": "ds_madeup", "target": "target"}}),
        ),
        "model version": (
            ("GET", f"/api/v1/models/{MODEL}/versions/1", {}),
            ("GET", "/api/v1/models/madeup/versions/1", {}),
        ),
        "alias their model": (
            ("PUT", f"/api/v1/models/{MODEL}/aliases/production", {"json": {"version": 1}}),
            ("PUT", "/api/v1/models/madeup/aliases/production", {"json": {"version": 1}}),
        ),
        "endpoint on their model": (
            ("POST", "/api/v1/endpoints", {"json": {"name": "stolen", "model": MODEL}}),
            ("POST", "/api/v1/endpoints", {"json": {"name": "stolen", "model": "madeup"}}),
        ),
        "endpoint switch": (
            ("PATCH", f"/api/v1/endpoints/{ENDPOINT}", {"json": {"version": 1}}),
            ("PATCH", "/api/v1/endpoints/madeup", {"json": {"version": 1}}),
        ),
        "endpoint delete": (
            ("DELETE", f"/api/v1/endpoints/{ENDPOINT}", {}),
            ("DELETE", "/api/v1/endpoints/madeup", {}),
        ),
    }
    for what, ((method, path, kwargs), (made_method, made_path, made_kwargs)) in calls.items():
        theirs = fresh.request(method, path, **kwargs)
        made_up = fresh.request(made_method, made_path, **made_kwargs)
        assert theirs.status_code == made_up.status_code == 404, (what, theirs.text, made_up.text)
        for response in (theirs, made_up):
            assert response.headers["content-type"].startswith("application/problem+json"), what
        assert theirs.json()["title"] == made_up.json()["title"], (what, theirs.json(), made_up.json())
    # The owner still has everything: nothing was cancelled or revoked by the intruder.
    client = owner["client"]
    assert client.get(f"/api/v1/jobs/{job_id}").json()["state"] == "succeeded"
    assert client.get(f"/api/v1/datasets/{dataset_id}").status_code == 200
    assert client.get(f"/api/v1/endpoints/{ENDPOINT}").status_code == 200
    assert "production" not in client.get(f"/api/v1/models/{MODEL}").json()["aliases"]
    assert _predict(client, {"instances": [GOOD]}).status_code == 200


def test_csv_upload_roundtrip_is_not_confused_by_bom(fresh: httpx.Client) -> None:
    """A sanity case beside the refusals: a UTF-8 BOM CSV is accepted with clean column names."""
    buffer = io.BytesIO("\ufeffa,b\n1,x\n2,y\n".encode())
    response = upload(fresh, buffer.getvalue(), "bom.csv")
    assert response.status_code == 201, response.text
    assert [c["name"] for c in response.json()["columns"]] == ["a", "b"]


HUGE = 2**70


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("GET", f"/api/v1/datasets/ds_x/versions/{HUGE}", {}),
        ("GET", "/api/v1/datasets/ds_x/preview", {"params": {"version": HUGE}}),
        ("GET", f"/api/v1/models/m/versions/{HUGE}", {}),
        ("GET", f"/api/v1/models/m/versions/{HUGE}/artifact", {}),
        ("PUT", "/api/v1/models/m/aliases/production", {"json": {"version": HUGE}}),
        ("POST", "/api/v1/endpoints", {"json": {"name": "e", "model": "m", "version": HUGE}}),
        ("POST", "/api/v1/jobs", {"json": {"dataset_id": "ds_x", "target": "y", "dataset_version": HUGE}}),
        ("GET", "/api/v1/jobs/job_x/events", {"params": {"after": HUGE}}),
        ("GET", "/api/v1/jobs/job_x/events", {"headers": {"Last-Event-ID": str(HUGE)}}),
    ],
)
def test_numbers_beyond_64_bits_are_422_not_500(fresh: httpx.Client, method: str, path: str, kwargs: Any) -> None:
    response = fresh.request(method, path, **kwargs)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


def test_a_model_name_of_another_task_is_409_at_submit(owner: dict[str, Any]) -> None:
    """The owner's MODEL classifies 'label'; a regression version cannot join it."""
    client = owner["client"]
    jobs_before = len(client.get("/api/v1/jobs").json())
    response = client.post(
        "/api/v1/jobs",
        json={"dataset_id": owner["dataset"]["id"], "target": "num", "model_name": MODEL},
    )
    assert response.status_code == 409, response.text
    assert "classification" in response.json()["detail"] and "regression" in response.json()["detail"]
    assert len(client.get("/api/v1/jobs").json()) == jobs_before


def test_a_diverging_job_fails_once_with_the_reason(owner: dict[str, Any]) -> None:
    client = owner["client"]
    hyperparameters = {"learning_rate": 10, "optimizer": "sgd", "momentum": 0.99, "epochs": 30, "dropout": 0}
    job = client.post(
        "/api/v1/jobs",
        json={
            "dataset_id": owner["dataset"]["id"],
            "target": "num",
            "model_name": "diverging",
            "hyperparameters": hyperparameters,
        },
    ).json()
    deadline = time.monotonic() + 120
    while (state := client.get(f"/api/v1/jobs/{job['id']}").json())["state"] in ("queued", "running"):
        assert time.monotonic() < deadline, state
        time.sleep(0.3)
    assert state["state"] == "failed" and state["attempts"] == 1, state
    assert "diverged" in state["error"] and "learning_rate" in state["error"]


REQUEST_LIMIT = 1024 * 1024  # MAAS_MAX_REQUEST_BYTES of the shared server (conftest)


def _chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        yield b"x" * min(size, total - sent)
        sent += size


def test_a_predict_body_over_the_request_limit_is_413_naming_it(owner: dict[str, Any]) -> None:
    padded = {**GOOD, "notes": "n" * (REQUEST_LIMIT + 10)}  # an ignored key, but the body is too big
    response = _predict(owner["client"], {"instances": [padded]})
    assert response.status_code == 413, response.text
    assert "MAAS_MAX_REQUEST_BYTES" in response.json()["detail"] and str(REQUEST_LIMIT) in response.json()["detail"]


@pytest.mark.parametrize("route", ["upload", "predict"])
def test_a_chunked_body_over_the_limit_is_413_not_400(owner: dict[str, Any], fresh: httpx.Client, route: str) -> None:
    """No Content-Length to check up front: the body is counted as it streams and cut off at the limit."""
    if route == "upload":
        boundary = "b0undary"
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n\r\na,b\r\n'

        def body() -> Iterator[bytes]:
            yield head.encode()
            yield from _chunks(UPLOAD_LIMIT + 512 * 1024)

        response = fresh.post(
            "/api/v1/datasets",
            content=body(),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        setting = "MAAS_MAX_UPLOAD_BYTES"
        assert dataset_ids(fresh) == set()
    else:
        response = owner["client"].post(
            f"/api/v1/endpoints/{ENDPOINT}/predict",
            content=_chunks(REQUEST_LIMIT + 512 * 1024),
            headers={"Content-Type": "application/json"},
        )
        setting = "MAAS_MAX_REQUEST_BYTES"
    assert response.status_code == 413, response.text
    assert setting in response.json()["detail"]


def test_concurrent_uploads_under_one_name_all_become_versions(fresh: httpx.Client) -> None:
    contents = [csv_bytes(small_frame(rows=50 + n)) for n in range(8)]

    def send(content: bytes) -> httpx.Response:
        return upload(fresh, content, "same.csv", name="same")

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(send, contents))
    assert [r.status_code for r in responses] == [201] * 8, [r.text for r in responses if r.status_code != 201]
    assert sorted(r.json()["version"] for r in responses) == list(range(1, 9))
    assert len({r.json()["id"] for r in responses}) == 1


def test_a_model_name_claimed_by_an_active_job_of_another_task_is_409(owner: dict[str, Any]) -> None:
    client = owner["client"]
    body = {"dataset_id": owner["dataset"]["id"], "model_name": "contested"}
    first = client.post("/api/v1/jobs", json=body | {"target": "label", "hyperparameters": {"epochs": 500}})
    assert first.status_code == 201, first.text
    try:
        second = client.post("/api/v1/jobs", json=body | {"target": "num"})
        assert second.status_code == 409, second.text
        assert first.json()["id"] in second.json()["detail"]
    finally:
        client.post(f"/api/v1/jobs/{first.json()['id']}/cancel")

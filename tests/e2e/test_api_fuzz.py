"""Property-based fuzzing of the whole API from its own OpenAPI schema (issue 8), against a real server.

Schemathesis generates requests for every operation the schema documents, valid ones and ones that break the
schema on purpose, with a fixed seed and a bounded number per operation. Every answer must be under 500, and
every error must have the documented shape: problem+json on the native API, ``{"error": {...}}`` on /v1.
The tenant owns a trained model behind an endpoint, a dataset, a job and an imported encoder: generated paths
name them half the time, and predict and /v1/embeddings also get bodies aimed at those models, so the routes
and the runtimes are reached beyond their 404s and schema checks. The number of requests sent is printed.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode

from tests.e2e.test_http_hardening import tiny_encoder_zip
from tests.harness import LiveServer, csv_bytes, new_tenant

SEED = 20261202
EXAMPLES = 25  # per operation and per mode (valid, invalid): about 2,000 requests in all
ENDPOINT = "fuzz-target-q7"
MODEL = "fuzz-model-q7"
ENCODER = "fuzz-encoder-q7"

# Admin-only operations: called with the platform admin key, everything else with a tenant developer key.
ADMIN_PATHS = ("/api/v1/tenants", "/metrics")
# Publishing a platform model reads a directory or package of the server's own disk, by design and for the
# admin only: generated paths ("", ".", "/") would make the server import from its working directory.
SKIPPED = {("POST", "/api/v1/platform/models/import")}


@dataclass
class Target:
    """What the fuzzed tenant owns, named in generated paths so that they reach past the 404s."""

    key: str
    path_values: dict[str, str]


@dataclass
class Findings:
    sent: int = 0
    failures: list[str] = field(default_factory=list)


def _frame(rows: int = 120) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    amount = rng.normal(size=rows)
    color = rng.choice(["red", "green", "blue"], size=rows)
    return pd.DataFrame(
        {"amount": amount, "color": color, "label": np.where(amount + (color == "red") > 0.3, "yes", "no")}
    )


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(
        tmp_path_factory.mktemp("maas-fuzz"),
        env={"MAAS_MAX_UPLOAD_BYTES": str(8 * 1024 * 1024), "MAAS_MAX_REQUEST_BYTES": str(1024 * 1024)},
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def target(live: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Target:
    tenant = new_tenant(live, f"fuzz-{uuid.uuid4().hex[:8]}")
    imported = requests.post(
        f"{live.url}/api/v1/models/import",
        headers={"Authorization": f"Bearer {tenant['key']}"},
        files={"file": ("tiny.zip", tiny_encoder_zip(tmp_path_factory.mktemp("encoder")), "application/zip")},
        data={"name": ENCODER},
        timeout=300,
    )
    assert imported.status_code == 201, imported.text
    with live.client(tenant["key"]) as client:
        dataset = client.upload_dataset_bytes(csv_bytes(_frame()), "fuzz.csv", name="fuzz")
        job = client.train(dataset["id"], "label", model_name=MODEL, hyperparameters={"epochs": 2})
        finished = client.wait_for_job(job["id"], timeout=300)
        assert finished["state"] == "succeeded", finished
        client.create_endpoint(ENDPOINT, MODEL)
    values = {"name": ENDPOINT, "dataset_id": dataset["id"], "job_id": job["id"], "version": "1", "alias": "best"}
    return Target(key=tenant["key"], path_values=values)


# Any JSON value, NaN and infinities included (the server's parser reads them).
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
# Predict bodies the schema cannot describe (it says "an array of anything"): instances with the trained model's
# columns (amount: a number, color: a category) holding any value, or more columns, so that the runtime's own
# checks are what answers, and some calls succeed.
_INSTANCE = st.fixed_dictionaries(
    {
        "amount": st.floats(-1e6, 1e6) | st.integers(-1000, 1000) | st.floats() | _JSON,
        "color": st.sampled_from(["red", "green", "blue"]) | st.text(max_size=8) | _JSON,
    }
) | st.fixed_dictionaries({"amount": st.floats(), "color": st.text(max_size=4)}, optional={"label": _JSON, "x": _JSON})
_PREDICT_BODIES = st.fixed_dictionaries(
    {"instances": st.lists(_INSTANCE, min_size=1, max_size=4) | st.lists(_JSON, min_size=1, max_size=3)}
)


# Embedding requests for the tenant's own encoder: texts, token ids, and anything else in their place.
_TOKENS = st.lists(st.integers(-5, 40_000) | st.integers(), max_size=6)
_EMBEDDING_BODIES = st.fixed_dictionaries(
    {
        "model": st.just(ENCODER),
        "input": st.text(max_size=40)
        | st.lists(st.text(max_size=20), max_size=4)
        | _TOKENS
        | st.lists(_TOKENS, max_size=3)
        | _JSON,
    },
    optional={
        "encoding_format": st.sampled_from(["float", "base64"]) | _JSON,
        "dimensions": st.integers(-2, 64) | _JSON,
        "user": st.text(max_size=8),
    },
)


def _extra_bodies(operation: Any) -> list[st.SearchStrategy[Case]]:
    """Bodies aimed at what the tenant owns, beyond what the schema can say; fuzzed more than other operations."""
    if operation.path.endswith("/predict"):
        bodies, path_parameters = _PREDICT_BODIES, {"name": ENDPOINT}
    elif operation.path == "/v1/embeddings":
        bodies, path_parameters = _EMBEDDING_BODIES, {}
    else:
        return []
    # Serialised here: the client refuses NaN and infinities, which Python's JSON (the server's) reads.
    cases = bodies.map(lambda body: json.dumps(body).encode()).flatmap(
        lambda body: operation.as_strategy(path_parameters=path_parameters, body=body, media_type="application/json")
    )
    return [cases] * 3


def _strategy(operation: Any, mode: GenerationMode, target: Target) -> st.SearchStrategy[Case]:
    generated = operation.as_strategy(generation_mode=mode)
    names = [param.name for param in operation.path_parameters]
    if not names or operation.method.upper() == "DELETE":  # deleting what the other operations aim at: never
        return generated
    values = {name: target.path_values[name] for name in names if name in target.path_values}
    if operation.path.startswith("/api/v1/models/"):
        values["name"] = MODEL
    return st.one_of(generated, operation.as_strategy(generation_mode=mode, path_parameters=values))


def _shape_problem(path: str, status: int, headers: dict[str, list[str]], content: bytes) -> str | None:
    """What is wrong with an error answer's shape, or None."""
    content_type = (headers.get("content-type") or [""])[0]
    try:
        body = json.loads(content)
    except ValueError:
        return f"a {status} whose body is not JSON: {content[:200]!r}"
    if path.startswith("/v1/"):
        error = body.get("error") if isinstance(body, dict) else None
        if not content_type.startswith("application/json") or not isinstance(error, dict):
            return f"a {status} not in OpenAI's shape ({content_type}): {content[:300]!r}"
        if set(error) != {"message", "type", "param", "code"} or not isinstance(error["message"], str):
            return f"a {status} with an OpenAI error of other fields: {error}"
        return None
    if not content_type.startswith("application/problem+json"):
        return f"a {status} not problem+json ({content_type}): {content[:300]!r}"
    if not isinstance(body, dict) or body.get("status") != status or not isinstance(body.get("detail"), str):
        return f"a {status} whose problem lacks its status or detail: {content[:300]!r}"
    return None


def _fuzz(operation: Any, target: Target, admin_key: str, url: str, findings: Findings) -> None:
    key = admin_key if operation.path.startswith(ADMIN_PATHS) else target.key
    headers = {"Authorization": f"Bearer {key}"}
    session = requests.Session()
    label = f"{operation.method.upper()} {operation.path}"
    strategies = [_strategy(operation, mode, target) for mode in GenerationMode]
    strategies += _extra_bodies(operation)

    @seed(SEED)
    @settings(
        max_examples=len(strategies) * EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: each failure is reported as it was sent
        suppress_health_check=list(HealthCheck),
    )
    @given(case=st.one_of(strategies))
    def run(case: Case) -> None:
        try:
            response = case.call(base_url=url, session=session, headers=headers, timeout=60)
        except requests.exceptions.ConnectionError as exc:
            findings.failures.append(f"{label}: the connection failed ({exc}); {case.as_curl_command(headers)}")
            return
        except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL, UnicodeError):
            return  # the client cannot send it: nothing reached the server
        findings.sent += 1
        status = response.status_code
        if status >= 500:
            body = response.content[:500]
            findings.failures.append(f"{label}: {status} {body!r}; {case.as_curl_command(headers)}")
        elif status >= 400 and (problem := _shape_problem(operation.path, status, response.headers, response.content)):
            findings.failures.append(f"{label}: {problem}; {case.as_curl_command(headers)}")

    try:
        run()
    finally:
        session.close()


def test_no_generated_request_is_a_server_error_and_every_error_has_its_shape(
    live: LiveServer, target: Target, capsys: pytest.CaptureFixture[str]
) -> None:
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    # Invalid input should meet the routes, not stop at the key check (which other tests drive).
    schema.config.generation.update(with_security_parameters=False)
    findings = Findings()
    started = time.monotonic()
    operations = [result.ok() for result in schema.get_all_operations()]
    fuzzed = [op for op in operations if (op.method.upper(), op.path) not in SKIPPED]
    assert len(fuzzed) >= 45, [f"{op.method} {op.path}" for op in operations]  # the whole API, not a part
    for operation in fuzzed:
        _fuzz(operation, target, live.admin_key, live.url, findings)
    seconds = time.monotonic() - started
    with capsys.disabled():
        print(f"\napi fuzz: {findings.sent} requests to {len(fuzzed)} operations in {seconds:.0f} s (seed {SEED})")
    # An operation without parameters has one distinct request; the aimed-at bodies make up for it.
    assert findings.sent >= len(fuzzed) * EXAMPLES
    assert not findings.failures, "\n".join(findings.failures[:40])
    assert requests.get(f"{live.url}/healthz", timeout=10).status_code == 200
    assert "unhandled error" not in live.output()

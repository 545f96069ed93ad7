"""The ``--demo`` walkthrough: a tenant, a real dataset, a trained model, a live endpoint, a curl to paste.

It drives the running server over HTTP with the SDK, exactly as a user would.
"""

from __future__ import annotations

import io
import json
import os
import shlex
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from sklearn.datasets import load_breast_cancer

from maas.client import Client, MaasAPIError

DEMO_TENANT = "demo"
DEMO_MODEL = "breast-cancer"
DEMO_ENDPOINT = "breast-cancer"


def breast_cancer_csv() -> tuple[bytes, dict[str, Any]]:
    """scikit-learn's breast-cancer table as CSV, and one row of features for the sample call."""
    frame = load_breast_cancer(as_frame=True).frame
    frame["target"] = frame["target"].map({0: "malignant", 1: "benign"})
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    sample = {k: round(float(v), 6) for k, v in frame.drop(columns="target").iloc[0].items()}
    return buffer.getvalue().encode(), sample


def _demo_key(base_url: str, admin_key: str, key_file: Path) -> str:
    if key_file.exists():
        saved = key_file.read_text(encoding="utf-8").strip()
        with Client(base_url, saved) as client:
            try:
                client.list_keys()
                return saved
            except MaasAPIError:
                pass
    with Client(base_url, admin_key) as admin:
        existing = {t["name"]: t for t in admin.list_tenants()}
        if DEMO_TENANT in existing:
            secret = str(admin.create_tenant_key(existing[DEMO_TENANT]["id"], "demo")["key"])
        else:
            secret = str(admin.create_tenant(DEMO_TENANT)["key"])
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secret + "\n")
    return secret


def run_demo(base_url: str, admin_key: str, home: Path, console: Console) -> str:
    """Train and deploy the demo model (once), call it, print the curl; returns the demo tenant's key."""
    key = _demo_key(base_url, admin_key, home / "demo.key")
    content, sample = breast_cancer_csv()
    with Client(base_url, key) as client:
        endpoints = {e["name"] for e in client.list_endpoints()}
        if DEMO_ENDPOINT not in endpoints:
            console.print("[bold]demo:[/] uploading scikit-learn's breast-cancer table (569 rows, 30 features)…")
            dataset = client.upload_dataset_bytes(content, "breast_cancer.csv", name="breast-cancer")
            job = client.train(dataset["id"], "target", model_name=DEMO_MODEL)
            console.print(f"[bold]demo:[/] training job {job['id']} (tabular-mlp) is running in a worker…")
            finished = client.wait_for_job(job["id"], timeout=900)
            if finished["state"] != "succeeded":
                console.print(f"[red]demo: training {finished['state']}: {finished.get('error')}[/]")
                return key
            metrics = client.get_model_version(DEMO_MODEL, finished["result"]["version"])["metrics"]
            console.print(
                f"[bold]demo:[/] model {DEMO_MODEL} v{finished['result']['version']}: test accuracy "
                f"{metrics.get('accuracy', float('nan')):.3f}, ROC AUC {metrics.get('roc_auc', float('nan')):.3f}"
            )
            client.create_endpoint(DEMO_ENDPOINT, DEMO_MODEL, alias="latest")
        answer = client.predict(DEMO_ENDPOINT, [sample])
    body = json.dumps({"instances": [sample]}, separators=(",", ":"))
    curl = (
        f"curl -s {base_url}/api/v1/endpoints/{DEMO_ENDPOINT}/predict "
        f"-H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' -d {shlex.quote(body)}"
    )
    console.print(f"[bold green]demo ready:[/] endpoint '{DEMO_ENDPOINT}' answered {answer['predictions'][0]!r}.")
    console.print(f"Demo tenant key (saved in {home / 'demo.key'}): {key}")
    console.print("Get a prediction:")
    print(curl, flush=True)
    return key


# What the demo asks each platform model, and the /v1 route that answers it.
_OPENAI_SAMPLES = {
    "all-minilm-l6-v2": (
        "embeddings",
        {"model": "all-minilm-l6-v2", "input": ["A man is eating food.", "A man is eating a piece of bread."]},
    ),
    "smollm2-135m-instruct": (
        "chat/completions",
        {
            "model": "smollm2-135m-instruct",
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "max_tokens": 30,
            "temperature": 0,
        },
    ),
}


def _summary(route: str, answer: dict[str, Any]) -> str:
    if route == "embeddings":
        vectors = [item["embedding"] for item in answer.get("data", [])]
        return f"{len(vectors)} vectors of {len(vectors[0]) if vectors else 0} dimensions"
    choices = answer.get("choices") or [{}]
    return repr(choices[0].get("message", {}).get("content", ""))


def print_openai_samples(base_url: str, key: str, models: list[str], console: Console) -> None:
    """For each platform model published, call it once through /v1 and print the curl that does the same."""
    for name in models:
        if name not in _OPENAI_SAMPLES:
            continue
        route, body = _OPENAI_SAMPLES[name]
        try:
            response = httpx.post(
                f"{base_url}/v1/{route}", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=300
            )
            outcome = (
                _summary(route, response.json()) if response.status_code == 200 else f"HTTP {response.status_code}"
            )
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
            outcome = f"failed: {exc}"
        curl = (
            f"curl -s {base_url}/v1/{route} -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' "
            f"-d {shlex.quote(json.dumps(body, separators=(',', ':')))}"
        )
        console.print(f"[bold green]demo:[/] platform model '{name}' via /v1/{route} answered {outcome}. Try it:")
        print(curl, flush=True)

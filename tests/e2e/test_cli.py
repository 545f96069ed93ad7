"""The README's "lifecycle with the CLI", run as real ``maas`` subprocesses against a real server.

Every command goes through ``python -m maas.cli.main`` with ``MAAS_URL`` and ``MAAS_API_KEY`` in the
environment, exactly as the README exports them; the one training run is shared by the whole module.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import LiveServer, breast_cancer_frame, csv_bytes, free_port

TENANT = "cli-acme"
DATASET = "cancer"
ENDPOINT = "cancer"
MODEL = f"{DATASET}-target"  # the registry name a job gets by default: '<dataset>-<target>'
LABELS = {"benign", "malignant"}
EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+)  loss (\d+\.\d+)  val_loss (\d+\.\d+)  val_accuracy 0?\.\d+  eta \d+s$")


@dataclass(frozen=True)
class CliRun:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        """Everything the user sees, with the console's line wrapping undone."""
        return " ".join(f"{self.stdout}\n{self.stderr}".split())

    def json(self) -> Any:
        """The JSON document the command printed last (after any progress lines such as ``epoch ...``)."""
        lines = self.stdout.splitlines()
        start = next((i for i, line in enumerate(lines) if line.startswith(("{", "["))), None)
        assert start is not None, f"no JSON in the output of maas {' '.join(self.args)}:\n{self.stdout}"
        return json.loads("\n".join(lines[start:]))

    def assert_ok(self) -> CliRun:
        assert self.returncode == 0, f"maas {' '.join(self.args)} exited {self.returncode}:\n{self.output}"
        return self

    def assert_readable_failure(self, exit_code: int) -> CliRun:
        assert self.returncode == exit_code, f"maas {' '.join(self.args)} exited {self.returncode}:\n{self.output}"
        assert "Traceback" not in self.output, self.output
        assert len(self.output) < 2000, f"an error should be a short message, got:\n{self.output}"
        return self


def maas(server: LiveServer, key: str, *args: str, program: list[str] | None = None) -> CliRun:
    """Run one ``maas`` command the way the README does: URL and key come from the environment."""
    env = {name: value for name, value in os.environ.items() if name not in {"FORCE_COLOR", "TTY_COMPATIBLE"}}
    env |= {"MAAS_URL": server.url, "MAAS_API_KEY": key, "NO_COLOR": "1", "COLUMNS": "200"}
    command = program or [sys.executable, "-m", "maas.cli.main"]
    done = subprocess.run([*command, *args], env=env, capture_output=True, text=True, timeout=180, check=False)
    return CliRun(tuple(args), done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def lifecycle(server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Tenant -> dataset upload -> ``train --wait`` -> endpoint, once for the module, all through the CLI."""
    tenant_run = maas(server, server.admin_key, "tenants", "create", TENANT).assert_ok()
    developer_key = tenant_run.json()["key"]

    frame = breast_cancer_frame().head(200)
    csv_path = tmp_path_factory.mktemp("cli") / "cancer.csv"
    csv_path.write_bytes(csv_bytes(frame))
    upload_run = maas(server, developer_key, "datasets", "upload", str(csv_path), "--name", DATASET).assert_ok()
    dataset_id = upload_run.json()["id"]

    train_run = maas(
        server, developer_key, "train", dataset_id, "--target", "target", "--params", '{"epochs": 5}', "--wait"
    ).assert_ok()
    endpoint_run = maas(
        server, developer_key, "endpoints", "create", ENDPOINT, "--model", MODEL, "--alias", "latest"
    ).assert_ok()
    return {
        "developer_key": developer_key,
        "tenant_run": tenant_run,
        "csv_path": csv_path,
        "upload_run": upload_run,
        "dataset_id": dataset_id,
        "train_run": train_run,
        "endpoint_run": endpoint_run,
        "rows": frame.drop(columns="target").head(5).to_dict(orient="records"),
    }


def test_tenants_create_prints_a_developer_key_once(server: LiveServer, lifecycle: dict[str, Any]) -> None:
    tenant = lifecycle["tenant_run"].json()
    assert tenant["name"] == TENANT and tenant["id"].startswith("ten_")
    assert tenant["key"].startswith("maas_sk_")
    # It is a developer key: it may issue keys, which a consumer key may not.
    listed = maas(server, tenant["key"], "keys", "list").assert_ok().json()
    assert ("default", "developer") in [(k["name"], k["role"]) for k in listed]
    assert all("key" not in k for k in listed), "a key's secret must only be shown when it is created"

    again = maas(server, server.admin_key, "tenants", "create", TENANT).assert_readable_failure(1)
    assert "409" in again.output and f"a tenant named '{TENANT}' already exists" in again.output


def test_tenants_create_needs_the_admin_key(server: LiveServer, lifecycle: dict[str, Any]) -> None:
    denied = maas(server, lifecycle["developer_key"], "tenants", "create", "not-by-a-developer")
    denied.assert_readable_failure(1)
    assert "403" in denied.output


def test_datasets_upload_profiles_the_file_and_same_name_makes_a_new_version(
    server: LiveServer, lifecycle: dict[str, Any]
) -> None:
    dataset = lifecycle["upload_run"].json()
    assert dataset["id"].startswith("ds_") and dataset["version"] == 1
    assert dataset["row_count"] == 200 and dataset["format"] == "csv"
    columns = {column["name"]: column for column in dataset["columns"]}
    assert len(columns) == 31 and columns["mean radius"]["type"] == "numeric"
    assert columns["target"]["unique"] == 2

    second = maas(
        server, lifecycle["developer_key"], "datasets", "upload", str(lifecycle["csv_path"]), "--name", DATASET
    ).assert_ok()
    assert second.json()["id"] == dataset["id"] and second.json()["version"] == 2


def test_train_wait_streams_epochs_and_ends_succeeded(lifecycle: dict[str, Any]) -> None:
    run: CliRun = lifecycle["train_run"]
    lines = run.stdout.splitlines()
    epochs = [match.groups() for line in lines if (match := EPOCH_LINE.match(line))]
    assert [(int(n), int(total)) for n, total, _, _ in epochs] == [(n, 5) for n in range(1, 6)], run.stdout
    assert all(float(loss) > 0 and float(val) > 0 for _, _, loss, val in epochs)
    states = [line.removeprefix("state: ") for line in lines if line.startswith("state: ")]
    assert states[-1] == "succeeded" and "running" in states, run.stdout
    assert lines.index("state: running") < next(i for i, line in enumerate(lines) if EPOCH_LINE.match(line))

    job = run.json()
    assert job["id"].startswith("job_") and job["state"] == "succeeded" and job["error"] is None
    assert job["spec"]["hyperparameters"]["epochs"] == 5
    assert job["spec"]["dataset_id"] == lifecycle["dataset_id"]
    assert job["result"]["model"] == MODEL and job["result"]["version"] == 1


def test_models_show_version_has_metrics_lineage_and_signature(server: LiveServer, lifecycle: dict[str, Any]) -> None:
    version = maas(server, lifecycle["developer_key"], "models", "show", MODEL, "--version", "1").assert_ok().json()
    assert version["version"] == 1 and version["artifact_format"] == "onnx"
    metrics = version["metrics"]
    assert 0.5 < metrics["accuracy"] <= 1.0 and 0.0 <= metrics["f1_macro"] <= 1.0
    assert metrics["epochs_run"] == 5 and sorted(metrics["labels"]) == sorted(LABELS)
    job_id = lifecycle["train_run"].json()["id"]
    assert version["lineage"]["dataset_id"] == lifecycle["dataset_id"] and version["lineage"]["job_id"] == job_id
    inputs = [column["name"] for column in version["signature"]["inputs"]]
    assert len(inputs) == 30 and "mean radius" in inputs and "target" not in inputs

    missing = maas(server, lifecycle["developer_key"], "models", "show", MODEL, "--version", "9")
    assert "404" in missing.assert_readable_failure(1).output


def test_endpoint_serves_the_latest_version_and_predict_prints_predictions(
    server: LiveServer, lifecycle: dict[str, Any]
) -> None:
    endpoint = lifecycle["endpoint_run"].json()
    assert endpoint["name"] == ENDPOINT and endpoint["model"] == MODEL
    assert endpoint["alias"] == "latest" and endpoint["serving_version"] == 1

    answer = maas(server, lifecycle["developer_key"], "predict", ENDPOINT, json.dumps(lifecycle["rows"]))
    body = answer.assert_ok().json()
    assert body["model"] == MODEL and body["version"] == 1
    assert len(body["predictions"]) == 5 and set(body["predictions"]) <= LABELS
    for probabilities in body["probabilities"]:
        assert set(probabilities) == LABELS and abs(sum(probabilities.values()) - 1) < 1e-4


def test_predict_reads_rows_from_a_file_and_wraps_a_single_object(
    server: LiveServer, lifecycle: dict[str, Any], tmp_path: Path
) -> None:
    rows_file = tmp_path / "rows.json"
    rows_file.write_text(json.dumps(lifecycle["rows"][0]))
    body = maas(server, lifecycle["developer_key"], "predict", ENDPOINT, f"@{rows_file}").assert_ok().json()
    assert len(body["predictions"]) == 1 and body["predictions"][0] in LABELS

    bad = maas(server, lifecycle["developer_key"], "predict", ENDPOINT, "[{not json")
    assert "instances are not valid JSON" in bad.assert_readable_failure(2).output


def test_consumer_key_can_predict_but_not_train(server: LiveServer, lifecycle: dict[str, Any]) -> None:
    issued = maas(server, lifecycle["developer_key"], "keys", "create", "web-app", "--role", "consumer")
    key = issued.assert_ok().json()
    assert key["name"] == "web-app" and key["role"] == "consumer" and key["key"].startswith("maas_sk_")

    body = maas(server, key["key"], "predict", ENDPOINT, json.dumps(lifecycle["rows"][:2])).assert_ok().json()
    assert len(body["predictions"]) == 2 and set(body["predictions"]) <= LABELS

    denied = maas(server, key["key"], "train", lifecycle["dataset_id"], "--target", "target", "--params", "{}")
    denied.assert_readable_failure(1)
    assert "403" in denied.output and "developer key" in denied.output and "consumer" in denied.output
    assert not denied.stdout.lstrip().startswith("{"), "a refused command must not print a job"


def test_bad_params_json_is_refused_before_any_job_is_created(server: LiveServer, lifecycle: dict[str, Any]) -> None:
    key = lifecycle["developer_key"]
    jobs_before = maas(server, key, "jobs", "list").assert_ok().json()
    bad = maas(server, key, "train", lifecycle["dataset_id"], "--target", "target", "--params", "{epochs: 5}")
    bad.assert_readable_failure(2)
    assert "--params is not valid JSON" in bad.output
    assert maas(server, key, "jobs", "list").assert_ok().json() == jobs_before


def test_out_of_range_hyperparameter_names_the_field(server: LiveServer, lifecycle: dict[str, Any]) -> None:
    args = ("train", lifecycle["dataset_id"], "--target", "target", "--params", '{"epochs": 0}')
    refused = maas(server, lifecycle["developer_key"], *args).assert_readable_failure(1)
    assert "422" in refused.output and "body.hyperparameters.epochs" in refused.output


def test_alias_and_switch_move_the_endpoint(server: LiveServer, lifecycle: dict[str, Any]) -> None:
    key = lifecycle["developer_key"]
    maas(server, key, "models", "alias", MODEL, "production", "1").assert_ok()
    switched = maas(server, key, "endpoints", "switch", ENDPOINT, "--alias", "production").assert_ok().json()
    assert switched["alias"] == "production" and switched["serving_version"] == 1
    body = maas(server, key, "predict", ENDPOINT, json.dumps(lifecycle["rows"][:1])).assert_ok().json()
    assert body["version"] == 1 and body["predictions"][0] in LABELS


def test_families_lists_tabular_mlp_and_its_hyperparameters(server: LiveServer, lifecycle: dict[str, Any]) -> None:
    listed = maas(server, lifecycle["developer_key"], "families", "--json").assert_ok().json()
    families = {f["name"]: f for f in listed}
    assert "tabular-mlp" in families
    assert {"classification", "regression"} <= set(families["tabular-mlp"]["tasks"])
    assert {"epochs", "hidden_layers", "learning_rate"} <= set(families["tabular-mlp"]["hyperparameters"]["properties"])


def test_families_table_shows_each_family_with_defaults_and_bounds(
    server: LiveServer, lifecycle: dict[str, Any]
) -> None:
    shown = maas(server, lifecycle["developer_key"], "families").assert_ok().stdout
    for family in httpx.get(
        f"{server.url}/api/v1/families", headers={"Authorization": f"Bearer {lifecycle['developer_key']}"}
    ).json():
        assert family["name"] in shown
    # learning_rate of tabular-mlp: default 0.001, bounds > 0.0 and <= 10.0
    line = next(line for line in shown.splitlines() if "learning_rate" in line)
    assert "0.001" in line and "> 0.0" in line and "<= 10.0" in line


def test_installed_maas_console_script_works(server: LiveServer, lifecycle: dict[str, Any]) -> None:
    script = shutil.which("maas", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the `maas` console script is not installed next to this interpreter")
    families = maas(server, lifecycle["developer_key"], "families", "--json", program=[script]).assert_ok().json()
    assert "tabular-mlp" in [f["name"] for f in families]


def test_errors_go_to_stderr_and_an_unreachable_server_is_one_readable_line(
    server: LiveServer, lifecycle: dict[str, Any], tmp_path: Path
) -> None:
    refused = maas(server, lifecycle["developer_key"], "models", "show", "no-such-model")
    refused.assert_readable_failure(1)
    assert refused.stdout == "" and "404" in refused.stderr

    nobody = LiveServer(tmp_path, port=free_port())  # never started: nothing listens on its port
    down = maas(nobody, lifecycle["developer_key"], "models", "list")
    down.assert_readable_failure(1)
    assert "cannot reach MaaS" in down.output and nobody.url in down.output

    missing = maas(server, lifecycle["developer_key"], "predict", ENDPOINT, f"@{tmp_path / 'absent.json'}")
    assert missing.returncode != 0 and "Traceback" not in missing.output


def test_cli_trains_and_serves_an_image_family(server: LiveServer, lifecycle: dict[str, Any], tmp_path: Path) -> None:
    """`maas train --family image-cnn` with no --target: the family knows its label; predict takes pixels."""
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    keep = np.concatenate([np.flatnonzero(digits.target == label)[:40] for label in (0, 1, 7)])
    pixels = (digits.images[keep] * 255 / 16).astype(np.uint8)
    archive = tmp_path / "digits.npz"
    np.savez(archive, x=pixels, y=digits.target[keep])
    key = lifecycle["developer_key"]
    dataset = maas(server, key, "datasets", "upload", str(archive), "--name", "cli-digits").assert_ok().json()
    assert dataset["kind"] == "images"
    params = json.dumps({"epochs": 3, "early_stopping_patience": 0})
    job = (
        maas(
            server,
            key,
            "train",
            dataset["id"],
            "--family",
            "image-cnn",
            "--model-name",
            "cli-digits",
            "--params",
            params,
            "--wait",
        )
        .assert_ok()
        .json()
    )
    assert job["state"] == "succeeded" and job["spec"]["target"] == "label"
    maas(server, key, "endpoints", "create", "cli-digits", "--model", "cli-digits", "--alias", "latest").assert_ok()
    instance = json.dumps([pixels[0].tolist()])
    body = maas(server, key, "predict", "cli-digits", instance, "--parameters", '{"top_k": 2}').assert_ok().json()
    assert body["predictions"][0] in (0, 1, 7) and len(body["top_k"][0]) == 2

"""A thin, typed-enough SDK over httpx. Every method is one HTTP call; errors carry the problem+json body."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

_TERMINAL = {"succeeded", "failed", "cancelled"}
_EVENTS_PAGE = 1000  # the server's page size for job events


class MaasAPIError(Exception):
    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        super().__init__(f"{status} {problem.get('title', 'Error')}: {problem.get('detail', problem)}")


class Client:
    def __init__(
        self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None, *, timeout: float = 60.0
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {"detail": response.text}
            raise MaasAPIError(response.status_code, problem)
        if response.status_code == 204 or not response.content:
            return None
        if response.headers.get("content-type", "").startswith("application/octet-stream"):
            return response.content
        return response.json()

    # tenants & keys
    def create_tenant(self, name: str) -> dict[str, Any]:
        return dict(self._call("POST", "/api/v1/tenants", json={"name": name}))

    def list_tenants(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/api/v1/tenants"))

    def create_tenant_key(self, tenant_id: str, name: str = "key", role: str = "developer") -> dict[str, Any]:
        """As the platform admin, issue a key for a tenant."""
        return dict(self._call("POST", f"/api/v1/tenants/{tenant_id}/keys", json={"name": name, "role": role}))

    def create_key(self, name: str, role: str = "consumer") -> dict[str, Any]:
        return dict(self._call("POST", "/api/v1/keys", json={"name": name, "role": role}))

    def list_keys(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/api/v1/keys"))

    def revoke_key(self, key_id: str) -> dict[str, Any]:
        return dict(self._call("DELETE", f"/api/v1/keys/{key_id}"))

    # datasets
    def upload_dataset(self, path: str | Path, name: str | None = None) -> dict[str, Any]:
        file_path = Path(path)
        data = {"name": name} if name else {}
        with file_path.open("rb") as handle:
            return dict(self._call("POST", "/api/v1/datasets", files={"file": (file_path.name, handle)}, data=data))

    def upload_dataset_bytes(self, content: bytes, filename: str, name: str | None = None) -> dict[str, Any]:
        data = {"name": name} if name else {}
        return dict(self._call("POST", "/api/v1/datasets", files={"file": (filename, content)}, data=data))

    def list_datasets(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/api/v1/datasets"))

    def get_dataset(self, dataset_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/api/v1/datasets/{dataset_id}"))

    def get_dataset_version(self, dataset_id: str, version: int) -> dict[str, Any]:
        return dict(self._call("GET", f"/api/v1/datasets/{dataset_id}/versions/{version}"))

    def preview_dataset(self, dataset_id: str, rows: int = 20, version: int | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"rows": rows} | ({"version": version} if version else {})
        return dict(self._call("GET", f"/api/v1/datasets/{dataset_id}/preview", params=params))

    def delete_dataset(self, dataset_id: str) -> None:
        self._call("DELETE", f"/api/v1/datasets/{dataset_id}")

    # jobs
    def train(
        self,
        dataset_id: str,
        target: str | None = None,
        *,
        family: str = "tabular-mlp",
        hyperparameters: dict[str, Any] | None = None,
        model_name: str | None = None,
        task: str | None = None,
        dataset_version: int | None = None,
        columns: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Queue a training job; ``columns`` maps a family's roles to columns, e.g. ``{"text": "review"}``."""
        body: dict[str, Any] = {"dataset_id": dataset_id, "family": family}
        optional = {
            "target": target,
            "hyperparameters": hyperparameters,
            "model_name": model_name,
            "task": task,
            "dataset_version": dataset_version,
            "columns": columns,
        }
        body |= {k: v for k, v in optional.items() if v is not None}
        return dict(self._call("POST", "/api/v1/jobs", json=body))

    def list_jobs(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/api/v1/jobs"))

    def get_job(self, job_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/api/v1/jobs/{job_id}"))

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/api/v1/jobs/{job_id}/cancel"))

    def job_events(self, job_id: str, after: int = 0) -> list[dict[str, Any]]:
        """Every event after ``after``, fetched page by page (a long job has thousands)."""
        events: list[dict[str, Any]] = []
        while True:
            page = list(self._call("GET", f"/api/v1/jobs/{job_id}/events", params={"after": after}))
            events += page
            if not page or len(page) < _EVENTS_PAGE:
                return events
            after = page[-1]["id"]

    def stream_job_events(self, job_id: str, *, reconnect_for: float = 60.0) -> Iterator[dict[str, Any]]:
        """Follow a job's events live (SSE) until it finishes.

        A dropped connection (a restarted server, a proxy timeout) is resumed with ``Last-Event-ID``, so
        no event is lost or repeated; after ``reconnect_for`` seconds without a connection it gives up.
        """
        last_id: int | None = None
        gave_up_at = time.monotonic() + reconnect_for
        while True:
            headers = {"Accept": "text/event-stream"}
            if last_id is not None:
                headers["Last-Event-ID"] = str(last_id)
            try:
                for event in self._sse_events(job_id, headers):
                    last_id = int(event["id"])
                    gave_up_at = time.monotonic() + reconnect_for
                    yield event
                    if event["kind"] == "state" and event["payload"].get("state") in _TERMINAL:
                        return
            except httpx.TransportError:
                if time.monotonic() > gave_up_at:
                    raise
            time.sleep(0.5)

    def _sse_events(self, job_id: str, headers: dict[str, str]) -> Iterator[dict[str, Any]]:
        with self._http.stream("GET", f"/api/v1/jobs/{job_id}/events", headers=headers, timeout=None) as response:
            if response.status_code >= 400:
                response.read()
                raise MaasAPIError(response.status_code, response.json())
            for line in response.iter_lines():
                if line.startswith("data: "):
                    yield dict(json.loads(line[len("data: ") :]))

    def wait_for_job(self, job_id: str, timeout: float = 600.0, poll: float = 0.5) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.get_job(job_id)
            if job["state"] in _TERMINAL:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['state']} after {timeout} s")
            time.sleep(poll)

    # models
    def list_models(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/api/v1/models"))

    def get_model(self, name: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/api/v1/models/{name}"))

    def get_model_version(self, name: str, version: int) -> dict[str, Any]:
        return dict(self._call("GET", f"/api/v1/models/{name}/versions/{version}"))

    def set_alias(self, name: str, alias: str, version: int) -> dict[str, Any]:
        return dict(self._call("PUT", f"/api/v1/models/{name}/aliases/{alias}", json={"version": version}))

    def download_model(self, name: str, version: int) -> bytes:
        return bytes(self._call("GET", f"/api/v1/models/{name}/versions/{version}/artifact"))

    def families(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/api/v1/families"))

    # endpoints
    def create_endpoint(
        self, name: str, model: str, *, version: int | None = None, alias: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name, "model": model}
        body |= {k: v for k, v in {"version": version, "alias": alias}.items() if v is not None}
        return dict(self._call("POST", "/api/v1/endpoints", json=body))

    def list_endpoints(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/api/v1/endpoints"))

    def get_endpoint(self, name: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/api/v1/endpoints/{name}"))

    def update_endpoint(self, name: str, *, version: int | None = None, alias: str | None = None) -> dict[str, Any]:
        body = {k: v for k, v in {"version": version, "alias": alias}.items() if v is not None}
        return dict(self._call("PATCH", f"/api/v1/endpoints/{name}", json=body))

    def delete_endpoint(self, name: str) -> None:
        self._call("DELETE", f"/api/v1/endpoints/{name}")

    def predict(
        self, endpoint: str, instances: list[Any], *, parameters: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Predictions for ``instances`` (objects, strings, images or questions, by the model's family)."""
        body: dict[str, Any] = {"instances": instances} | ({"parameters": parameters} if parameters else {})
        return dict(self._call("POST", f"/api/v1/endpoints/{endpoint}/predict", json=body))

    def usage(self) -> dict[str, Any]:
        return dict(self._call("GET", "/api/v1/usage"))

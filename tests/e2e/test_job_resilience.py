"""Jobs survive kill -9 of their worker and of the whole server, resuming from the last checkpoint."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from maas.client import Client
from tests.harness import LiveServer, breast_cancer_frame, csv_bytes, new_tenant

FAST_LEASE = {"MAAS_JOB_LEASE_SECONDS": "4", "MAAS_JOB_HEARTBEAT_SECONDS": "0.5", "MAAS_DISPATCHER_POLL_SECONDS": "0.2"}
# Slow enough to be killed mid-run: many small epochs, no early stopping.
LONG_RUN = {"epochs": 400, "batch_size": 8, "early_stopping_patience": 0}


def _worker_pids(server: LiveServer) -> list[int]:
    assert server.process is not None
    group = os.getpgid(server.process.pid)
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == server.process.pid:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            if b"maas.jobs.worker" in cmdline and os.getpgid(int(entry.name)) == group:
                pids.append(int(entry.name))
        except (OSError, ProcessLookupError):
            continue
    return pids


def _epochs(client: Client, job_id: str) -> list[int]:
    return [e["payload"]["epoch"] for e in client.job_events(job_id) if e["kind"] == "epoch"]


def _epochs_by_attempt(client: Client, job_id: str) -> list[list[int]]:
    """The epochs each attempt reported, split at each attempt's ``running`` event."""
    attempts: list[list[int]] = []
    for event in client.job_events(job_id):
        if event["kind"] == "state" and event["payload"]["state"] == "running":
            attempts.append([])
        elif event["kind"] == "epoch":
            attempts[-1].append(event["payload"]["epoch"])
    return attempts


def _wait_for_epoch(client: Client, job_id: str, at_least: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        epochs = _epochs(client, job_id)
        if epochs and max(epochs) >= at_least:
            return max(epochs)
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never reached epoch {at_least}")


def _start_job(server: LiveServer, tenant: str) -> tuple[Client, str]:
    client = server.client(new_tenant(server, tenant)["key"])
    dataset = client.upload_dataset_bytes(csv_bytes(breast_cancer_frame()), "bc.csv", name="bc")
    job = client.train(dataset["id"], "target", hyperparameters=LONG_RUN, model_name="resilient")
    return client, job["id"]


def _assert_resumed(client: Client, job_id: str, killed_after: int) -> None:
    first, second = _epochs_by_attempt(client, job_id)
    assert max(first) >= killed_after
    # The resumed attempt starts right after the last checkpoint, not at epoch 1: finished epochs are not
    # redone (at most the one in flight when the worker died), and none is skipped.
    assert second[0] > 1
    assert max(first) - 1 <= second[0] <= max(first) + 1
    assert second == list(range(second[0], LONG_RUN["epochs"] + 1))


@pytest.mark.slow
def test_job_resumes_after_its_worker_is_killed(tmp_path: Path) -> None:
    server = LiveServer(tmp_path / "home", env=FAST_LEASE).start()
    try:
        client, job_id = _start_job(server, "worker-kill")
        reached = _wait_for_epoch(client, job_id, 5)
        pids = _worker_pids(server)
        assert pids, "no worker process found"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        finished = client.wait_for_job(job_id, timeout=300)
        assert finished["state"] == "succeeded", finished
        assert finished["attempts"] == 2
        _assert_resumed(client, job_id, reached)
    finally:
        server.stop()


@pytest.mark.slow
def test_job_resumes_after_the_whole_server_is_killed(tmp_path: Path) -> None:
    home = tmp_path / "home"
    server = LiveServer(home, env=FAST_LEASE).start()
    client, job_id = _start_job(server, "server-kill")
    # A follower on its own connection, like `maas train --wait`: it must ride out the restart.
    followed: list[dict[str, Any]] = []
    follower_key = client._http.headers["Authorization"].split(" ", 1)[1]
    follower = threading.Thread(
        target=lambda: followed.extend(Client(server.url, follower_key).stream_job_events(job_id)), daemon=True
    )
    follower.start()
    reached = _wait_for_epoch(client, job_id, 5)
    server.kill_hard()
    restarted = LiveServer(home, env=FAST_LEASE, port=server.port).start()
    try:
        client = Client(restarted.url, follower_key)
        finished = client.wait_for_job(job_id, timeout=300)
        assert finished["state"] == "succeeded", finished
        _assert_resumed(client, job_id, reached)
        follower.join(timeout=30)
        # Every event exactly once, in order, through the reconnect (Last-Event-ID).
        assert [e["id"] for e in followed] == [e["id"] for e in client.job_events(job_id)]
        assert followed[-1]["payload"]["state"] == "succeeded"
    finally:
        restarted.stop()


def test_cancel_stops_a_running_job(server: LiveServer) -> None:
    client, job_id = _start_job(server, "canceller")
    _wait_for_epoch(client, job_id, 2)
    client.cancel_job(job_id)
    finished = client.wait_for_job(job_id, timeout=60)
    assert finished["state"] == "cancelled"
    assert max(_epochs(client, job_id)) < LONG_RUN["epochs"]

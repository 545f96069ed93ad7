"""The child process an import loads a model in: limits hold, and it sees nothing of the server."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from maas.errors import InvalidInput
from maas.registry import child_process
from maas.registry.child_process import ChildLimits, run_child

REPO = Path(__file__).resolve().parents[2]
PROBE = "tests.unit.child_probe"


@pytest.fixture(autouse=True)
def _probe_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(REPO))


def test_the_child_runs_in_its_own_folder_without_the_servers_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAAS_ADMIN_KEY", "maas_sk_secret")
    monkeypatch.setenv("MAAS_DATABASE_URL", "postgresql://user:password@db/maas")
    report = run_child(PROBE, ["report"], tmp_path / "out", limits=ChildLimits(30, 1 << 30), what="probing")
    assert Path(report["cwd"]) == (tmp_path / "out").resolve()
    assert not [name for name in report["environment"] if name.startswith("MAAS_")]


def test_an_allocation_past_the_memory_limit_refuses_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(child_process, "_RESERVED_ADDRESS_SPACE", 1 << 30)
    with pytest.raises(InvalidInput, match="more than 512 MiB of memory"):
        run_child(PROBE, ["allocate"], tmp_path / "out", limits=ChildLimits(30, 512 << 20), what="loading the model")


def test_a_child_past_its_time_is_killed_and_the_model_refused(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(InvalidInput, match="longer than 2 s"):
        run_child(PROBE, ["sleep"], tmp_path / "out", limits=ChildLimits(2, 1 << 30), what="loading the model")
    assert time.monotonic() - started < 10


def test_the_childs_own_refusal_is_the_message(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="a reason of its own"):
        run_child(PROBE, ["refuse"], tmp_path / "out", limits=ChildLimits(30, 1 << 30), what="loading the model")

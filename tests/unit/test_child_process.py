"""The child process an import loads a model in: limits hold, and it sees nothing of the server."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from maas.errors import InvalidInput, Unavailable
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


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a process that still runs (a zombie waiting to be reaped does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_child_past_its_time_is_killed_with_everything_it_started(tmp_path: Path) -> None:
    """subprocess.run killed only the direct child: a grandchild it started ran on, past the import."""
    out = tmp_path / "out"
    with pytest.raises(InvalidInput, match="longer than 2 s"):
        run_child(PROBE, ["spawn"], out, limits=ChildLimits(2, 1 << 30), what="loading the model")
    grandchild = int((out / "grandchild.pid").read_text(encoding="utf-8"))
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


def test_a_file_past_the_size_limit_refuses_the_model(tmp_path: Path) -> None:
    limits = ChildLimits(30, 1 << 30, max_file_bytes=1 << 20)
    with pytest.raises(InvalidInput, match="wrote a file larger than 1 MiB"):
        run_child(PROBE, ["write", str(2 << 20)], tmp_path / "out", limits=limits, what="converting the model")
    assert (tmp_path / "out" / "written.bin").stat().st_size <= 1 << 20


def test_the_file_size_limit_leaves_room_for_a_converted_model() -> None:
    assert ChildLimits(30, 1 << 30).max_file_bytes >= 16 << 30
    assert ChildLimits.for_model(4 << 30, timeout_s=30).max_file_bytes >= 40 << 30


def _in_thread(action: list[str], out: Path, limits: ChildLimits) -> tuple[threading.Thread, list[Exception]]:
    """``run_child`` of the probe in a thread of its own; the errors it raised, once joined."""
    errors: list[Exception] = []

    def run() -> None:
        try:
            run_child(PROBE, action, out, limits=limits, what="importing")
        except Exception as exc:  # handed to the test
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


def test_imports_past_the_queue_are_told_the_server_is_busy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The queue was unbounded: slow imports held every thread of the server's pool for up to 30 min each."""
    monkeypatch.setattr(child_process, "_TURNS", child_process._Turns(waiting=1))
    limits = ChildLimits(30, 1 << 30)
    running, running_errors = _in_thread(["sleep", "3"], tmp_path / "a", limits)
    time.sleep(0.5)
    queued, queued_errors = _in_thread(["report"], tmp_path / "b", limits)
    time.sleep(0.5)
    started = time.monotonic()
    with pytest.raises(Unavailable, match="busy converting other models"):
        run_child(PROBE, ["report"], tmp_path / "c", limits=limits, what="c")
    assert time.monotonic() - started < 1  # refused at once, not after a wait
    running.join(30)
    queued.join(30)
    assert running_errors == [] and queued_errors == []  # the queued import ran once the first was done
    assert not (tmp_path / "c" / "report.json").exists()  # no child was started for it


def test_the_wait_for_a_turn_is_bounded_and_not_the_childs_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(child_process, "_TURNS", child_process._Turns(waiting=4))
    monkeypatch.setattr(child_process, "_MAX_WAIT_S", 1.0)
    running, _ = _in_thread(["sleep", "3"], tmp_path / "a", ChildLimits(30, 1 << 30))
    time.sleep(0.5)
    with pytest.raises(Unavailable, match="busy converting other models"):
        run_child(PROBE, ["report"], tmp_path / "b", limits=ChildLimits(30, 1 << 30), what="b")
    monkeypatch.setattr(child_process, "_MAX_WAIT_S", 30.0)
    # Queued behind the 3 s child for about 2 s, with a time limit of 2 s of its own: it still runs.
    report = run_child(PROBE, ["report"], tmp_path / "c", limits=ChildLimits(2, 1 << 30), what="c")
    assert Path(report["cwd"]) == (tmp_path / "c").resolve()
    running.join(30)

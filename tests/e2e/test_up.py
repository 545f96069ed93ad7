"""`maas up` as the README's first command runs it: the admin key, the demo, and the curl it prints."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.harness import LiveServer


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl to run the printed command")
def test_demo_prints_a_curl_that_answers_and_the_admin_key_only_once(tmp_path: Path) -> None:
    home = tmp_path / "home"
    server = LiveServer(home, args=("--demo",)).start()
    try:
        output = server.wait_for_output("Get a prediction:")
        admin_key = (home / "admin.key").read_text().strip()
        assert (home / "admin.key").stat().st_mode & 0o777 == 0o600
        assert output.count(admin_key) == 1, "the admin key is printed exactly once"
        curl = next(line for line in output.splitlines() if line.startswith("curl "))
        assert server.url in curl
        answered = subprocess.run(shlex.split(curl), capture_output=True, text=True, timeout=30, check=True)
        body = json.loads(answered.stdout)
        assert body["endpoint"] == "breast-cancer" and body["version"] == 1
        assert body["predictions"][0] in ("benign", "malignant")
        assert (home / "demo.key").read_text().strip() in curl
    finally:
        server.stop()
    # A second start reuses everything: no new admin key is printed, the demo endpoint still answers.
    again = LiveServer(home, args=("--demo",), port=server.port).start()
    try:
        output = again.wait_for_output("Get a prediction:", timeout=60)
        # Both runs write to the same log: the key (and its banner) appear once, from the first start.
        assert output.count(admin_key) == 1 and output.count("Platform admin key") == 1
        answered = subprocess.run(shlex.split(curl), capture_output=True, text=True, timeout=30, check=True)
        assert json.loads(answered.stdout)["version"] == 1
    finally:
        again.stop()


def test_an_admin_key_from_the_environment_is_used_and_never_written(tmp_path: Path) -> None:
    supplied = "maas_sk_" + "s" * 40
    server = LiveServer(tmp_path / "home", env={"MAAS_ADMIN_KEY": supplied}).start()
    try:
        assert not (tmp_path / "home" / "admin.key").exists()
        assert supplied not in server.output()
        headers = {"Authorization": f"Bearer {supplied}"}
        assert httpx.get(f"{server.url}/api/v1/tenants", headers=headers).status_code == 200
        wrong = {"Authorization": "Bearer maas_sk_" + "w" * 40}
        assert httpx.get(f"{server.url}/api/v1/tenants", headers=wrong).status_code == 401
    finally:
        server.stop()


def test_a_short_admin_key_refuses_to_start_without_echoing_it(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="at least 24") as refused:
        LiveServer(tmp_path / "home", env={"MAAS_ADMIN_KEY": "hunter2-hunter2"}).start(timeout=60)
    assert "hunter2" not in str(refused.value) and "Traceback" not in str(refused.value)


def test_a_bad_setting_is_named_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="configuration error: MAAS_MAX_UPLOAD_BYTES") as refused:
        LiveServer(tmp_path / "home", env={"MAAS_MAX_UPLOAD_BYTES": "lots"}).start(timeout=60)
    assert "Traceback" not in str(refused.value)

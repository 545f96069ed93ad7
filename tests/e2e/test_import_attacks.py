"""The security review's import attacks, replayed against a real server started as ``maas up`` leaves it.

The server runs in its own working directory with ``MAAS_HOME`` at ``./.maas`` (the default), so the admin
key and the SQLite file sit where a relative path inside a tenant's model file can aim at them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import LiveServer, new_tenant
from tests.hostile_models import file_reading_graph, tar_gz, tar_gz_of_zeros, tokenizer_json, zip_of_zeros

UNPACKED_LIMIT = 512 << 20


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("server-cwd")
    server = LiveServer(workdir / ".maas", env={"MAAS_MAX_UNPACKED_BYTES": str(UNPACKED_LIMIT)})
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)  # the server process starts here: its working directory holds .maas/
        server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def key(live: LiveServer) -> str:
    return str(new_tenant(live, "attacker")["key"])


def _import(live: LiveServer, key: str, name: str, filename: str, content: bytes) -> httpx.Response:
    return httpx.post(
        f"{live.url}/api/v1/models/import",
        headers={"Authorization": f"Bearer {key}"},
        files={"file": (filename, content, "application/octet-stream")},
        data={"name": name},
        timeout=300,
    )


@pytest.mark.parametrize("target", ["admin.key", "maas.db"])
def test_an_onnx_graph_cannot_read_the_servers_files(live: LiveServer, key: str, target: str) -> None:
    """The graph's 'embedding' is the bytes of ./.maas/<target>; a decoy of that name rides in the archive."""
    secret = (live.home / target).read_bytes()[:48]
    location = f".maas/{target}"
    archive = tar_gz(
        {
            "model.onnx": file_reading_graph(location, len(secret)),
            location: b"x" * len(secret),
            "tokenizer.json": tokenizer_json(),
        }
    )
    name = f"leak-{target.replace('.', '-')}"
    response = _import(live, key, name, "leak.tar.gz", archive)
    assert response.status_code == 422, response.text
    assert "external data" in response.text and "model.onnx" in response.text
    embeddings = httpx.post(
        f"{live.url}/v1/embeddings",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": name, "input": "hello world"},
        timeout=60,
    )
    assert embeddings.status_code == 404
    for answer in (response, embeddings):
        assert secret.decode("latin-1") not in answer.text
        assert live.admin_key not in answer.text and "SQLite format" not in answer.text


def _status(pid: int, field: str) -> int:
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith(field))
    return int(line.split()[1]) * 1024


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bombs")
    return {
        # Refused by their announced size before a byte is unpacked.
        "2 GiB tar.gz": tar_gz_of_zeros(folder / "bomb.tar.gz", "model.safetensors", 2 << 30),
        "2 GiB zip": zip_of_zeros(folder / "bomb.zip", "model.safetensors", 2 << 30),
        # Within the limit: unpacked to disk, then refused as not a safetensors file.
        "384 MiB tar.gz": tar_gz_of_zeros(folder / "big.tar.gz", "model.safetensors", 384 << 20),
        "384 MiB zip": zip_of_zeros(folder / "big.zip", "model.safetensors", 384 << 20),
    }


@pytest.mark.parametrize(
    ("bomb", "status"), [("2 GiB tar.gz", 413), ("2 GiB zip", 413), ("384 MiB tar.gz", 422), ("384 MiB zip", 422)]
)
def test_an_archive_bomb_leaves_the_servers_memory_alone(
    live: LiveServer, key: str, bombs: dict[str, Path], bomb: str, status: int
) -> None:
    assert live.process is not None
    pid = live.process.pid
    content = bombs[bomb].read_bytes()
    assert len(content) < 12 << 20
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak (VmHWM) restarts from the current size
    except OSError:
        pytest.skip("this kernel does not let the peak RSS be reset")
    before = _status(pid, "VmRSS")
    response = _import(live, key, "bomb", bombs[bomb].name, content)
    growth = _status(pid, "VmHWM") - before
    assert response.status_code == status, response.text
    assert growth < 100 << 20, f"the server grew by {growth >> 20} MiB while refusing {bomb}"

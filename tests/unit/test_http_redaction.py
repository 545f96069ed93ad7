"""No error answer carries a server path or a key: the redactor, and the handlers that apply it (issue 8)."""

from __future__ import annotations

import site
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from maas.api.app import create_app
from maas.api.redaction import SECRET, SERVER_PATH, Redactor
from maas.config import Settings
from maas.errors import InvalidInput
from maas.redaction import url_directory

HOME = Path("/srv/maas-home")


@pytest.fixture(scope="module")
def redact() -> Redactor:
    return Redactor.for_server(HOME)


def test_the_upload_path_of_a_failed_import_is_hidden(redact: Redactor) -> None:
    # What an import error said (issue 8, finding 4).
    text = f"Load model from {tempfile.gettempdir()}/maas-upload-x1y2/model/model.onnx failed: bad graph."
    assert redact(text) == f"Load model from {SERVER_PATH} failed: bad graph."


@pytest.mark.parametrize(
    "path",
    [
        f"{HOME}/artifacts/ab/abcdef",
        f"{Path.cwd()}/admin.key",
        f"{site.getsitepackages()[0]}/onnxruntime/capi/session.py",
        f"{sys.prefix}/bin/python",
        f"{Path.home()}/.cache/huggingface/x.json",
        f"{tempfile.gettempdir()}",
    ],
)
def test_every_server_directory_is_hidden(redact: Redactor, path: str) -> None:
    assert redact(f"cannot read '{path}' (line 3)") == f"cannot read '{SERVER_PATH}' (line 3)"
    assert redact(f"File {path}: no such file") == f"File {SERVER_PATH}: no such file"
    assert redact(f"stored at file://{path}.") == f"stored at file://{SERVER_PATH}."


@pytest.mark.parametrize(
    "text",
    [
        "POST /v1/chat/completions with 'messages'",
        "use /api/v1/endpoints/x/predict or /v1/embeddings",
        "the column 'a/b' is empty",
        "tokenizer.json: not a tokenizer",
        f"/var{tempfile.gettempdir()}/x is not under a root",  # a root inside another path is not that root
    ],
)
def test_api_paths_and_plain_text_are_kept(redact: Redactor, text: str) -> None:
    assert redact(text) == text


def test_an_api_key_is_hidden(redact: Redactor) -> None:
    assert redact("key maas_sk_AbC-123_xyz was revoked") == f"key {SECRET} was revoked"


def test_the_root_directory_and_the_apis_namespaces_are_never_roots() -> None:
    # A server started in / (or in /api) must not hide every path, or the API's own.
    redact = Redactor(["/", "/api", "/v1/x", "/srv/x"])
    assert redact("see /v1/models, /api/v1/models and /srv/x/y") == f"see /v1/models, /api/v1/models and {SERVER_PATH}"


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FastAPI, Path]]:
    home = tmp_path_factory.mktemp("maas-redaction")
    app = create_app(Settings(home=home, shipped_models="none"), run_jobs=False)

    def leak() -> None:
        raise InvalidInput(
            f"could not read {home}/artifacts/x.onnx",
            errors=[{"loc": ["body", "file"], "msg": f"{tempfile.gettempdir()}/maas-upload-1/a.json is bad"}],
        )

    app.add_api_route("/api/v1/test-leak", leak)
    app.add_api_route("/v1/test-leak", leak)
    yield app, home


def test_the_error_handlers_redact_problem_json_and_openai_errors(app: tuple[FastAPI, Path]) -> None:
    fastapi_app, home = app
    with TestClient(fastapi_app) as client:
        native = client.get("/api/v1/test-leak")
        openai = client.get("/v1/test-leak")
    assert native.status_code == 422
    assert native.json()["detail"] == f"could not read {SERVER_PATH}"
    assert native.json()["errors"][0]["msg"] == f"{SERVER_PATH} is bad"
    assert openai.status_code == 400
    assert openai.json()["error"]["message"] == f"could not read {SERVER_PATH}"
    for response in (native, openai):
        assert str(home) not in response.text and tempfile.gettempdir() not in response.text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("connect to postgresql+psycopg://maas:s3cr%40t@db:5432/maas failed", f"postgresql+psycopg://{SECRET}@db"),
        ("GET https://user:pw@example.com/x timed out", f"https://{SECRET}@example.com/x"),
        ("s3://AKIAXYZ:abc/def@bucket/key", f"s3://{SECRET}@bucket/key"),
    ],
)
def test_credentials_in_a_url_are_hidden(redact: Redactor, text: str, expected: str) -> None:
    assert expected in redact(text)
    assert "s3cr" not in redact(text) and ":pw@" not in redact(text) and "abc" not in redact(text)


def test_urls_without_credentials_are_kept(redact: Redactor) -> None:
    text = "see https://example.com/docs/a@b and postgresql://db:5432/maas"
    assert redact(text) == text


def test_the_directories_and_secrets_the_settings_name_are_hidden(tmp_path: Path) -> None:
    admin_key = "adm1n-key-0123456789abcdefghij"
    settings = Settings(
        home=tmp_path / "home",
        storage_url="file:///srv/blob-store/artifacts",
        database_url="sqlite:////var/lib/maas-db/maas.db",
        admin_key=admin_key,
        shipped_models="none",
    )
    redact = Redactor.for_settings(settings)
    assert redact("blob /srv/blob-store/artifacts/ab/abcd is damaged") == f"blob {SERVER_PATH} is damaged"
    assert redact("database /var/lib/maas-db/maas.db is locked") == f"database {SERVER_PATH} is locked"
    assert redact(f"key {admin_key} refused") == f"key {SECRET} refused"
    assert redact("key maas_sk_AbC-123 refused") == f"key {SECRET} refused"
    assert redact("/srv/other/x and /var/lib/other stay") == "/srv/other/x and /var/lib/other stay"


@pytest.mark.parametrize(
    ("url", "directory"),
    [
        ("file:///srv/store", "/srv/store"),
        ("sqlite:////var/lib/maas/maas.db", "/var/lib/maas"),
        ("sqlite+pysqlite:////var/lib/maas/maas.db", "/var/lib/maas"),
        ("sqlite:///:memory:", None),
        ("postgresql://u:p@db/maas", None),
        ("s3://bucket/prefix", None),
        ("", None),
    ],
)
def test_the_local_folder_a_setting_url_names(url: str, directory: str | None) -> None:
    assert url_directory(url) == directory

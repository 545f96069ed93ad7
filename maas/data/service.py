"""Datasets and their immutable versions: upload, look up, preview, delete.

Plain functions over a SQLAlchemy ``Session`` (and an ``ArtifactStore`` where bytes are involved). They
flush but never commit: the caller's ``session_scope`` does. The original uploaded bytes are stored
content-addressed; the rows pointing at them are written only after the blob is complete (DESIGN 4).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from maas.data.formats import MAX_COLUMNS, load_frame, read_table
from maas.data.images import inspect_image_upload, preview_images
from maas.data.profile import json_safe, profile_columns
from maas.db.tables import Dataset, DatasetVersion
from maas.db.tenancy import get_owned
from maas.errors import InvalidInput, NotFound, PayloadTooLarge
from maas.ids import new_id
from maas.storage import ArtifactStore

NAME_MAX_LENGTH = 200
FILENAME_MAX_LENGTH = 255
MAX_PREVIEW_ROWS = 1000

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", re.ASCII)


# Unpacking limits for archives when the caller gives none (the API passes the operator's settings).
DEFAULT_MAX_ARCHIVE_MEMBERS = 100_000
DEFAULT_MAX_UNPACKED_BYTES = 1024 * 1024 * 1024
IMAGE_FORMATS = ("image-zip", "npz", "image-parquet")


@dataclass(frozen=True)
class CheckedUpload:
    """An upload that parsed and profiled cleanly, its blob stored: what a new version row records."""

    filename: str
    kind: str  # "tabular" (tables, also text and interactions) or "images"
    format: str
    digest: str
    size_bytes: int
    row_count: int
    columns: list[dict[str, Any]]


def check_upload(
    store: ArtifactStore,
    *,
    filename: str,
    content: bytes,
    max_bytes: int,
    max_columns: int = MAX_COLUMNS,
    max_archive_members: int = DEFAULT_MAX_ARCHIVE_MEMBERS,
    max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES,
) -> CheckedUpload:
    """Validate, parse and profile an upload, then store its blob (complete before any row names it).

    Archives (a zip of class folders, NPZ) and Parquet files with an image column are image datasets;
    everything else is parsed as a table (CSV, JSONL, Parquet)."""
    if len(content) > max_bytes:
        detail = f"the file is {len(content)} bytes; the limit is {max_bytes} bytes"
        raise PayloadTooLarge(detail, errors=[{"loc": ["body", "file"], "msg": detail, "limit": max_bytes}])
    images = inspect_image_upload(
        content, filename, max_members=max_archive_members, max_unpacked_bytes=max_unpacked_bytes
    )
    if images is not None:
        kind, data_format, row_count, columns = "images", images.format, images.row_count, images.columns
    else:
        frame, data_format = read_table(content, filename, max_columns=max_columns)
        kind, row_count, columns = "tabular", len(frame), profile_columns(frame)
    return CheckedUpload(
        filename=display_filename(filename),
        kind=kind,
        format=data_format,
        digest=store.put(content),
        size_bytes=len(content),
        row_count=row_count,
        columns=columns,
    )


def add_version(session: Session, *, tenant_id: str, name: str, upload: CheckedUpload) -> DatasetVersion:
    """Record ``upload`` as a new dataset ``name``, or as its next version.

    Two uploads under one name at once can collide on the version number: the commit then raises Conflict
    and the caller retries with a fresh session (the checked upload is reused as it is)."""
    check_name(name)
    dataset = session.scalars(select(Dataset).where(Dataset.tenant_id == tenant_id, Dataset.name == name)).one_or_none()
    if dataset is None:
        dataset = Dataset(id=new_id("ds"), tenant_id=tenant_id, name=name, kind=upload.kind)
        session.add(dataset)
        number = 1
    else:
        if dataset.kind != upload.kind:
            detail = (
                f"dataset '{name}' holds {dataset.kind} data and this upload is {upload.kind}: a version cannot "
                "change the kind of data; upload it under another name"
            )
            raise InvalidInput(detail, errors=[{"loc": ["body", "file"], "msg": detail}])
        number = _max_version(session, dataset.id) + 1
    version = DatasetVersion(
        id=new_id("dsv"),
        tenant_id=tenant_id,
        version=number,
        original_filename=upload.filename,
        format=upload.format,
        digest=upload.digest,
        size_bytes=upload.size_bytes,
        row_count=upload.row_count,
        columns=upload.columns,
    )
    version.dataset = dataset
    session.add(version)
    session.flush()
    return version


def upload_dataset(
    session: Session,
    store: ArtifactStore,
    *,
    tenant_id: str,
    name: str,
    filename: str,
    content: bytes,
    max_bytes: int,
    max_columns: int = MAX_COLUMNS,
) -> DatasetVersion:
    """Validate, profile and store an upload as a new dataset, or as the next version of ``name``."""
    check_name(name)
    upload = check_upload(store, filename=filename, content=content, max_bytes=max_bytes, max_columns=max_columns)
    return add_version(session, tenant_id=tenant_id, name=name, upload=upload)


def list_datasets(session: Session, tenant_id: str) -> list[Dataset]:
    statement = (
        select(Dataset)
        .where(Dataset.tenant_id == tenant_id)
        .options(selectinload(Dataset.versions))
        .order_by(Dataset.created_at, Dataset.id)
    )
    return list(session.scalars(statement).all())


def get_dataset(session: Session, tenant_id: str, dataset_id: str) -> Dataset:
    """The tenant's dataset; another tenant's id is ``NotFound`` exactly like an unknown one."""
    return get_owned(session, Dataset, tenant_id, "dataset", id=dataset_id)


def get_version(session: Session, tenant_id: str, dataset_id: str, version: int) -> DatasetVersion:
    dataset = get_dataset(session, tenant_id, dataset_id)
    statement = select(DatasetVersion).where(
        DatasetVersion.tenant_id == tenant_id,
        DatasetVersion.dataset_id == dataset.id,
        DatasetVersion.version == version,
    )
    row = session.scalars(statement).one_or_none()
    if row is None:
        raise NotFound("dataset version", f"{dataset_id} v{version}")
    return row


def latest_version(session: Session, tenant_id: str, dataset_id: str) -> DatasetVersion:
    dataset = get_dataset(session, tenant_id, dataset_id)
    return get_version(session, tenant_id, dataset.id, _max_version(session, dataset.id))


def resolve_version(session: Session, tenant_id: str, dataset_id: str, version: int | None) -> DatasetVersion:
    """The given version, or the latest when ``version`` is None."""
    if version is None:
        return latest_version(session, tenant_id, dataset_id)
    return get_version(session, tenant_id, dataset_id, version)


def preview(
    session: Session,
    store: ArtifactStore,
    *,
    tenant_id: str,
    dataset_id: str,
    version: int | None,
    rows: int,
) -> dict[str, Any]:
    """The first ``rows`` rows of a version as plain JSON (NaN → null, timestamps → ISO strings)."""
    if not 0 <= rows <= MAX_PREVIEW_ROWS:
        detail = f"rows must be between 0 and {MAX_PREVIEW_ROWS}"
        raise InvalidInput(detail, errors=[{"loc": ["query", "rows"], "msg": detail}])
    row = resolve_version(session, tenant_id, dataset_id, version)
    if row.format in IMAGE_FORMATS:
        columns, described = preview_images(store.get(row.digest), row.format, rows)
        return {"dataset_id": row.dataset_id, "version": row.version, "columns": columns, "rows": described}
    head = load_version_frame(store, row).head(rows)
    return {
        "dataset_id": row.dataset_id,
        "version": row.version,
        "columns": [str(name) for name in head.columns],
        "rows": [[json_safe(value) for value in values] for values in head.itertuples(index=False, name=None)],
    }


def delete_dataset(session: Session, *, tenant_id: str, dataset_id: str) -> set[str]:
    """Delete a dataset with all its versions; returns the digests of their blobs.

    The blobs stay: once this transaction commits, :func:`maas.data.blobs.release` removes those nothing
    else names. Model versions name dataset ids in their lineage as plain strings, so they survive this.
    """
    dataset = get_dataset(session, tenant_id, dataset_id)
    digests = {version.digest for version in dataset.versions}
    session.delete(dataset)
    session.flush()
    return digests


def load_version_frame(store: ArtifactStore, version: DatasetVersion) -> pd.DataFrame:
    """The stored bytes of ``version`` parsed back into the DataFrame that was profiled at upload."""
    return load_frame(store.get(version.digest), version.format)


def display_filename(filename: str) -> str:
    """The uploaded name for display only: no path components, no control characters, ≤ 255 chars."""
    base = re.split(r"[/\\]", filename)[-1]
    cleaned = "".join(ch for ch in base if not unicodedata.category(ch).startswith("C")).strip()
    if cleaned in {"", ".", ".."}:
        return "upload"
    return cleaned[:FILENAME_MAX_LENGTH]


def check_name(name: str) -> None:
    if not (1 <= len(name) <= NAME_MAX_LENGTH and _NAME.fullmatch(name)):
        detail = (
            f"the dataset name must be 1 to {NAME_MAX_LENGTH} characters: letters, digits, '-', '_' or '.', "
            "starting with a letter or digit"
        )
        raise InvalidInput(detail, errors=[{"loc": ["body", "name"], "msg": detail}])


def _max_version(session: Session, dataset_id: str) -> int:
    statement = select(func.max(DatasetVersion.version)).where(DatasetVersion.dataset_id == dataset_id)
    return int(session.scalar(statement) or 0)

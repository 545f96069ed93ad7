"""The dataset service against a real SQLite file and a real (local) artifact store."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from maas.data import service
from maas.db.engine import make_engine, make_session_factory, session_scope
from maas.db.tables import Base, Dataset, DatasetVersion, Tenant
from maas.errors import InvalidInput, NotFound, PayloadTooLarge
from maas.storage.local import LocalArtifactStore

CSV = b"age,plan,joined\n31,pro,2024-01-05\n,basic,2024-02-11\n45,pro,\n"
LIMIT = 1_000_000


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    engine = make_engine(f"sqlite:///{tmp_path / 'maas.db'}")
    Base.metadata.create_all(engine)
    factory = make_session_factory(engine)
    with session_scope(factory) as setup:
        setup.add_all([Tenant(id="ten_a", name="a"), Tenant(id="ten_b", name="b")])
    db = factory()
    try:
        yield db
    finally:
        db.close()
        engine.dispose()


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "artifacts")


def _upload(
    session: Session,
    store: LocalArtifactStore,
    content: bytes = CSV,
    *,
    name: str = "customers",
    tenant_id: str = "ten_a",
    filename: str = "customers.csv",
) -> DatasetVersion:
    return service.upload_dataset(
        session, store, tenant_id=tenant_id, name=name, filename=filename, content=content, max_bytes=LIMIT
    )


def _count(session: Session, model: type[Dataset] | type[DatasetVersion]) -> int:
    return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_upload_creates_dataset_and_version(session: Session, store: LocalArtifactStore) -> None:
    version = _upload(session, store, filename="C:\\Users\\me\\Desk\x07top\\customers.csv")
    session.commit()
    assert version.dataset.name == "customers" and version.dataset.tenant_id == "ten_a"
    assert version.id.startswith("dsv_") and version.dataset_id.startswith("ds_")
    assert version.version == 1
    assert version.format == "csv"
    assert version.row_count == 3
    assert version.size_bytes == len(CSV)
    assert version.digest == hashlib.sha256(CSV).hexdigest()
    assert store.get(version.digest) == CSV  # the original bytes
    assert version.original_filename == "customers.csv"
    assert [column["name"] for column in version.columns] == ["age", "plan", "joined"]
    assert [column["type"] for column in version.columns] == ["numeric", "categorical", "datetime"]
    json.dumps(version.columns, allow_nan=False)


def test_same_name_adds_a_version(session: Session, store: LocalArtifactStore) -> None:
    first = _upload(session, store)
    second = _upload(session, store, b"age,plan\n1,x\n")
    assert second.dataset_id == first.dataset_id and second.version == 2
    other = _upload(session, store, name="other")
    assert other.dataset_id != first.dataset_id and other.version == 1
    assert service.latest_version(session, "ten_a", first.dataset_id).id == second.id
    assert service.resolve_version(session, "ten_a", first.dataset_id, None).version == 2
    assert service.resolve_version(session, "ten_a", first.dataset_id, 1).id == first.id
    assert service.get_version(session, "ten_a", first.dataset_id, 2).row_count == 1
    with pytest.raises(NotFound):
        service.get_version(session, "ten_a", first.dataset_id, 3)
    listed = service.list_datasets(session, "ten_a")
    assert [dataset.name for dataset in listed] == ["customers", "other"]
    assert [version.version for version in listed[0].versions] == [1, 2]


def test_same_name_in_another_tenant_is_another_dataset(session: Session, store: LocalArtifactStore) -> None:
    mine = _upload(session, store)
    theirs = _upload(session, store, tenant_id="ten_b")
    assert theirs.dataset_id != mine.dataset_id and theirs.version == 1


def test_other_tenant_sees_not_found(session: Session, store: LocalArtifactStore) -> None:
    version = _upload(session, store)
    session.commit()
    dataset_id = version.dataset_id

    with pytest.raises(NotFound) as missing:
        service.get_dataset(session, "ten_b", "ds_doesnotexist")
    with pytest.raises(NotFound) as foreign:
        service.get_dataset(session, "ten_b", dataset_id)
    assert foreign.value.detail == missing.value.detail.replace("ds_doesnotexist", dataset_id)

    calls: list[Callable[[], object]] = [
        lambda: service.get_version(session, "ten_b", dataset_id, 1),
        lambda: service.latest_version(session, "ten_b", dataset_id),
        lambda: service.resolve_version(session, "ten_b", dataset_id, None),
        lambda: service.preview(session, store, tenant_id="ten_b", dataset_id=dataset_id, version=None, rows=5),
        lambda: service.delete_dataset(session, tenant_id="ten_b", dataset_id=dataset_id),
    ]
    for call in calls:
        with pytest.raises(NotFound) as caught:
            call()
        assert caught.value.kind == "dataset"
    assert service.list_datasets(session, "ten_b") == []
    assert store.exists(version.digest)
    assert _count(session, Dataset) == 1


def test_preview_is_json_safe(session: Session, store: LocalArtifactStore) -> None:
    version = _upload(session, store)
    result = service.preview(session, store, tenant_id="ten_a", dataset_id=version.dataset_id, version=None, rows=2)
    assert result == {
        "dataset_id": version.dataset_id,
        "version": 1,
        "columns": ["age", "plan", "joined"],
        "rows": [[31.0, "pro", "2024-01-05"], [None, "basic", "2024-02-11"]],
    }
    json.dumps(result, allow_nan=False)
    with pytest.raises(InvalidInput):
        service.preview(session, store, tenant_id="ten_a", dataset_id=version.dataset_id, version=None, rows=-1)


def test_parquet_round_trip_and_preview_timestamps(session: Session, store: LocalArtifactStore) -> None:
    frame = pd.DataFrame(
        {"x": [1.5, float("nan")], "when": pd.to_datetime(pd.Series(["2024-01-01 10:00", None])), "s": ["a", None]}
    )
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    version = _upload(session, store, buffer.getvalue(), filename="data.parquet")
    assert version.format == "parquet" and version.row_count == 2
    pd.testing.assert_frame_equal(service.load_version_frame(store, version), frame)
    result = service.preview(session, store, tenant_id="ten_a", dataset_id=version.dataset_id, version=1, rows=10)
    assert result["rows"] == [[1.5, "2024-01-01T10:00:00", "a"], [None, None, None]]


def test_delete_removes_the_rows_and_names_the_blobs_to_release(session: Session, store: LocalArtifactStore) -> None:
    shared = b"a,b\n1,2\n"
    first = _upload(session, store, CSV, name="one")
    _upload(session, store, shared, name="one")
    _upload(session, store, shared, name="two", tenant_id="ten_b")
    session.commit()

    released = service.delete_dataset(session, tenant_id="ten_a", dataset_id=first.dataset_id)
    session.commit()

    assert released == {hashlib.sha256(CSV).hexdigest(), hashlib.sha256(shared).hexdigest()}
    assert all(store.exists(digest) for digest in released)  # blobs go only after the commit (maas.data.blobs)
    assert _count(session, Dataset) == 1 and _count(session, DatasetVersion) == 1
    with pytest.raises(NotFound):
        service.get_dataset(session, "ten_a", first.dataset_id)


@pytest.mark.parametrize(
    "name",
    ["", "-leading", ".hidden", "has space", "semi;colon", "a/b", "x" * 201, "naïve"],
)
def test_bad_names(session: Session, store: LocalArtifactStore, name: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        _upload(session, store, name=name)
    assert caught.value.errors[0]["loc"] == ["body", "name"]


def test_good_names(session: Session, store: LocalArtifactStore) -> None:
    for name in ("a", "Sales_2024.v2-final", "9lives", "x" * 200):
        assert _upload(session, store, name=name).dataset.name == name


def test_too_large(session: Session, store: LocalArtifactStore) -> None:
    with pytest.raises(PayloadTooLarge) as caught:
        service.upload_dataset(
            session, store, tenant_id="ten_a", name="big", filename="big.csv", content=CSV, max_bytes=10
        )
    assert "10 bytes" in caught.value.detail


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"a,b\n1,\x00\n",
        "a\ncafé\n".encode("latin-1"),
        b"a,b\n1,2\n3\n",
        b"a,a\n1,2\n",
        b"a,b\n",
        b"a,,b\n1,2,3\n",
        b"PAR1 this is not really parquet",
    ],
)
def test_failed_upload_leaves_no_row_and_no_blob(session: Session, store: LocalArtifactStore, content: bytes) -> None:
    with pytest.raises(InvalidInput):
        _upload(session, store, content)
    session.rollback()
    assert _count(session, Dataset) == 0 and _count(session, DatasetVersion) == 0
    assert not store.exists(hashlib.sha256(content).hexdigest())
    assert [path for path in store.root.rglob("*") if path.is_file()] == []


def test_failed_new_version_keeps_the_old_one(session: Session, store: LocalArtifactStore) -> None:
    first = _upload(session, store)
    session.commit()
    with pytest.raises(InvalidInput):
        _upload(session, store, b"a,b\n1\n")
    session.rollback()
    assert service.latest_version(session, "ten_a", first.dataset_id).version == 1
    assert _count(session, DatasetVersion) == 1


def test_display_filename() -> None:
    assert service.display_filename("../../etc/passwd") == "passwd"
    assert service.display_filename("a\\b\\c.csv") == "c.csv"
    assert service.display_filename("evil\u202egpj.csv\n") == "evilgpj.csv"
    assert service.display_filename("..") == "upload"
    assert service.display_filename("") == "upload"
    assert len(service.display_filename("x" * 1000)) == 255

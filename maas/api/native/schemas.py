"""Wire shapes of the native API (documented in the OpenAPI schema at /docs)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# Integers reach SQL: beyond 64 bits a driver raises instead of matching nothing, so bound them here.
MAX_VERSION = 2**31 - 1
MAX_EVENT_ID = 2**53


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class TenantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="Unique tenant name: letters, digits, '-', '_', '.'", examples=["acme"])


class TenantOut(Out):
    id: str
    name: str
    created_at: datetime


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(default="key", examples=["web-frontend"])
    role: Literal["developer", "consumer"] = Field(
        description="developer: everything in the tenant; consumer: predict only"
    )


class KeyOut(Out):
    id: str
    tenant_id: str
    name: str
    role: str
    display_prefix: str
    created_at: datetime
    revoked_at: datetime | None


class KeyCreated(KeyOut):
    key: str = Field(description="The secret. It is shown only in this response; store it now.")


class TenantCreated(TenantOut):
    key: str = Field(description="The tenant's first developer key. Shown only in this response.")
    key_id: str


class ColumnProfile(BaseModel):
    model_config = ConfigDict(extra="allow")  # kinds add facts: image sizes, class counts

    name: str
    type: str
    dtype: str | None = None
    missing: int
    unique: int | None = None
    stats: dict[str, Any] = {}


class DatasetVersionOut(Out):
    id: str
    dataset_id: str
    version: int
    original_filename: str
    format: str
    digest: str
    size_bytes: int
    row_count: int
    columns: list[ColumnProfile]
    created_at: datetime


class DatasetOut(Out):
    id: str
    name: str
    kind: str
    created_at: datetime
    latest_version: int
    versions: list[int]


class DatasetUploaded(DatasetVersionOut):
    """The new version. ``id`` is the dataset's id (stable across versions); ``version_id`` the version's."""

    name: str
    kind: str = Field(description="tabular (tables, text, interactions) or images")
    version_id: str


class PreviewOut(BaseModel):
    dataset_id: str
    version: int
    columns: list[str]
    rows: list[list[Any]]


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset_id: str
    dataset_version: int | None = Field(
        default=None, ge=1, le=MAX_VERSION, description="Defaults to the newest version"
    )
    family: str = Field(default="tabular-mlp", examples=["tabular-mlp"])
    target: str | None = Field(
        default=None, description="The column to predict (image datasets: 'label'; see GET /api/v1/families)"
    )
    columns: dict[str, str] | None = Field(
        default=None,
        description="Role -> column for families that need more than a target, e.g. {'text': 'review'} or "
        "{'user': 'uid', 'item': 'movie', 'rating': 'stars'}; inferred from common names when absent",
    )
    task: str | None = Field(
        default=None,
        max_length=40,
        description="classification or regression (tabular), rating or ranking (recommender); inferred when absent",
    )
    hyperparameters: dict[str, Any] = Field(default_factory=dict, description="See GET /api/v1/families")
    model_name: str | None = Field(default=None, description="Registry name; defaults to '<dataset>-<target>'")


class JobOut(Out):
    id: str
    family: str
    state: str
    spec: dict[str, Any]
    attempts: int
    progress: float
    error: str | None
    result: dict[str, Any] | None
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobEventOut(Out):
    id: int = Field(description="Sequence number; pass it as ?after= (or Last-Event-ID) to resume")
    kind: str
    payload: dict[str, Any]
    created_at: datetime


class ModelVersionOut(Out):
    id: str
    version: int
    artifact_digest: str
    artifact_format: str
    metrics: dict[str, Any]
    signature: dict[str, Any]
    hyperparameters: dict[str, Any]
    lineage: dict[str, Any]
    preprocessing: dict[str, Any]
    created_at: datetime


class ModelVersionSummary(Out):
    id: str
    version: int
    metrics: dict[str, Any]
    created_at: datetime


class ModelOut(Out):
    id: str
    name: str
    family: str
    task: str
    created_at: datetime
    latest_version: int | None
    aliases: dict[str, int]


class ModelDetail(ModelOut):
    versions: list[ModelVersionSummary]


class AliasSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = Field(ge=1, le=MAX_VERSION)


class EndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(examples=["churn"])
    model: str = Field(description="Model name in the registry")
    version: int | None = Field(default=None, ge=1, le=MAX_VERSION, description="Pin a version…")
    alias: str | None = Field(default=None, description="…or follow an alias ('production', 'latest'). Default: latest")


class EndpointPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    version: int | None = Field(default=None, ge=1, le=MAX_VERSION)
    alias: str | None = None


class EndpointOut(BaseModel):
    id: str
    name: str
    model: str
    version: int | None = Field(description="Pinned version, or null when following an alias")
    alias: str | None
    serving_version: int = Field(description="The version answering now")
    url: str
    created_at: datetime
    updated_at: datetime


class PredictRequest(BaseModel):
    instances: list[Any] = Field(
        description=(
            "One entry per prediction, in the shape the model's family takes (its signature says): an object "
            "of feature column -> value (tabular-mlp), a string (text-classifier), a base64 image or a pixel "
            "array (image-cnn), a {user, item} question (recommender-mf)"
        ),
        examples=[[{"age": 42, "plan": "pro"}]],
    )
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="Options of the family, e.g. {'top_k': 3} or {'k': 10}"
    )


class PredictResponse(BaseModel):
    model_config = ConfigDict(extra="allow")  # families add fields (top_k, cold_start, ...)

    endpoint: str
    model: str
    version: int
    predictions: list[Any]
    probabilities: list[dict[str, float]] | None = None
    latency_ms: float

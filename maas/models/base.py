"""The protocol every model family meets (DESIGN decision 7). Torch-free: the API validates with it.

A family is three pieces, each found by the family's name in a registry:

- this torch-free description (:data:`maas.models.FAMILIES`): hyperparameters, which datasets it trains
  on, and :meth:`ModelFamily.plan`, which checks a training request against a dataset's profile at
  submit time, so a mismatch is a 422 at once instead of a job failing minutes later;
- a trainer (:data:`maas.training.registry.TRAINERS`, imported only in worker processes: torch);
- a serving runtime (:data:`maas.serving.loaders.RUNTIMES`, torch-free: ONNX Runtime or numpy).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import BaseModel

TaskKind = Literal["classification", "regression"]


@dataclass(frozen=True)
class DatasetInfo:
    """What a family may know about a dataset version when a job is submitted (no bytes are read)."""

    name: str
    kind: str  # "tabular" (CSV/Parquet/JSONL tables: also text and interactions) or "images"
    format: str  # e.g. "csv", "parquet", "jsonl", "image-zip", "npz", "image-parquet"
    row_count: int
    columns: list[dict[str, Any]]  # the profile: {"name", "type", "missing", "unique", ...} per column

    def column(self, name: str) -> dict[str, Any] | None:
        return next((column for column in self.columns if column["name"] == name), None)


@dataclass(frozen=True)
class PlanRequest:
    """The user's training request, as far as a family needs it."""

    target: str | None
    task: str | None
    columns: dict[str, str] = field(default_factory=dict)  # role -> column, e.g. {"text": "review"}


@dataclass(frozen=True)
class JobPlan:
    """A checked request: what the job spec records and the trainer reads back."""

    task: str
    target: str | None
    roles: dict[str, str] = field(default_factory=dict)  # role -> column, defaults filled in
    extra: dict[str, Any] = field(default_factory=dict)  # family-specific facts for the trainer


class ModelFamily(Protocol):
    """What the API, the job runner and the CLI need to know about a family without importing torch."""

    @property
    def name(self) -> str:
        """Registry key, e.g. ``"tabular-mlp"``."""
        ...

    @property
    def task_kinds(self) -> tuple[str, ...]:
        """Tasks the family can train, e.g. ``("classification", "regression")``."""
        ...

    @property
    def data_kinds(self) -> tuple[str, ...]:
        """Dataset kinds it trains on, e.g. ``("tabular",)``."""
        ...

    @property
    def hyperparameters(self) -> type[BaseModel]:
        """Pydantic model of the hyperparameters, with defaults and bounds."""
        ...

    def parse_hyperparameters(self, raw: dict[str, Any] | None) -> BaseModel:
        """Validate user hyperparameters; raises ``maas.errors.InvalidInput`` naming each bad field."""
        ...

    def plan(self, dataset: DatasetInfo, request: PlanRequest) -> JobPlan:
        """Check ``request`` against ``dataset``; raises ``InvalidInput`` naming the field to fix."""
        ...

    def describe(self) -> dict[str, Any]:
        """JSON description for a family listing: name, tasks, data, hyperparameter JSON schema."""
        ...

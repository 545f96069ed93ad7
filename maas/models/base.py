"""The protocol every model family meets (DESIGN decision 7). Torch-free: the API validates with it."""

from __future__ import annotations

from typing import Any, Literal, Protocol

from pydantic import BaseModel

TaskKind = Literal["classification", "regression"]


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
    def hyperparameters(self) -> type[BaseModel]:
        """Pydantic model of the hyperparameters, with defaults and bounds."""
        ...

    def parse_hyperparameters(self, raw: dict[str, Any] | None) -> BaseModel:
        """Validate user hyperparameters; raises ``maas.errors.InvalidInput`` naming each bad field."""
        ...

    def describe(self) -> dict[str, Any]:
        """JSON description for a family listing: name, tasks, hyperparameter JSON schema."""
        ...

"""The ``embedding`` family: pretrained sentence encoders, imported (never trained here) and served by
``POST /v1/embeddings`` through ONNX Runtime + ``tokenizers`` (:mod:`maas.serving.embeddings`).

It is listed with the other families so that ``maas families`` and ``GET /api/v1/families`` show every
kind of model the platform serves; a training job for it is refused with the way to get one instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from maas.errors import InvalidInput
from maas.models.base import DatasetInfo, JobPlan, PlanRequest

FAMILY_NAME = "embedding"


class EmbeddingHyperparameters(BaseModel):
    """None: an embedding model is used as imported."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class EmbeddingFamily:
    name: str = FAMILY_NAME
    task_kinds: tuple[str, ...] = ("embedding",)
    data_kinds: tuple[str, ...] = ()
    hyperparameters: type[EmbeddingHyperparameters] = EmbeddingHyperparameters

    def parse_hyperparameters(self, raw: dict[str, Any] | None) -> EmbeddingHyperparameters:
        try:
            return EmbeddingHyperparameters.model_validate(raw or {})
        except ValidationError:
            raise InvalidInput("the embedding family takes no hyperparameters") from None

    def plan(self, dataset: DatasetInfo, request: PlanRequest) -> JobPlan:
        detail = (
            "embedding models are imported, not trained: POST /api/v1/models/import with a safetensors or ONNX "
            "sentence encoder (or use the platform's all-minilm-l6-v2), then call POST /v1/embeddings"
        )
        raise InvalidInput(detail, errors=[{"loc": ["body", "family"], "msg": detail}])

    def describe(self) -> dict[str, Any]:
        return {
            "name": FAMILY_NAME,
            "tasks": ["embedding"],
            "data": "imported pretrained encoders (safetensors or ONNX + tokenizer.json)",
            "description": "Sentence embeddings (mean pooling, L2-normalised) served by POST /v1/embeddings.",
            "hyperparameters": EmbeddingHyperparameters.model_json_schema(),
            "artifact": "onnx",
            "trainable": False,
        }


EMBEDDING = EmbeddingFamily()

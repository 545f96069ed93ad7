"""Model families, one module each, behind :class:`maas.models.base.ModelFamily`.

Importing this package never imports torch; the torch networks live in ``*_net`` modules that only
training code imports.
"""

from __future__ import annotations

from maas.models.base import ModelFamily, TaskKind
from maas.models.causal_lm import CAUSAL_LM
from maas.models.embedding import EMBEDDING
from maas.models.image_cnn import IMAGE_CNN
from maas.models.recommender_mf import RECOMMENDER_MF
from maas.models.tabular_mlp import TABULAR_MLP
from maas.models.text_classifier import TEXT_CLASSIFIER

FAMILIES: dict[str, ModelFamily] = {
    TABULAR_MLP.name: TABULAR_MLP,
    IMAGE_CNN.name: IMAGE_CNN,
    RECOMMENDER_MF.name: RECOMMENDER_MF,
    CAUSAL_LM.name: CAUSAL_LM,
    TEXT_CLASSIFIER.name: TEXT_CLASSIFIER,
    EMBEDDING.name: EMBEDDING,
}

__all__ = ["FAMILIES", "ModelFamily", "TaskKind"]

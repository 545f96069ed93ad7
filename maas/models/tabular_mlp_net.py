"""The torch network of ``tabular-mlp``; imported only by training code."""

from __future__ import annotations

import torch
from torch import nn

from maas.models.tabular_mlp import TabularMLPHyperparameters

_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


class TabularMLP(nn.Module):
    """Linear → activation → dropout per hidden layer, then a linear head giving ``n_outputs`` raw scores
    (logits for classification, the standardised target for regression)."""

    def __init__(self, n_features: int, n_outputs: int, hyperparameters: TabularMLPHyperparameters) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for hidden in hyperparameters.hidden_layers:
            layers.append(nn.Linear(width, hidden))
            layers.append(_ACTIVATIONS[hyperparameters.activation]())
            if hyperparameters.dropout > 0:
                layers.append(nn.Dropout(hyperparameters.dropout))
            width = hidden
        layers.append(nn.Linear(width, n_outputs))
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.layers(features)
        return out


def build_network(n_features: int, n_outputs: int, hyperparameters: TabularMLPHyperparameters) -> TabularMLP:
    """Build with weights drawn from ``hyperparameters.seed`` (deterministic, global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(hyperparameters.seed)
        return TabularMLP(n_features, n_outputs, hyperparameters)

"""LoRA (Hu et al. 2021): low-rank adapters on chosen linear layers, merged into the weights at the end.

``W x`` becomes ``W x + (alpha / r) * B A x`` with ``A`` (r x in) random and ``B`` (out x r) zero, so training
starts from the base model exactly. Only ``A`` and ``B`` train: the optimizer state and the checkpoints
hold a few MB instead of the whole model. :func:`merge` folds ``B A`` into ``W`` and removes the adapters,
so the result is a plain model that any loader serves at full speed.

GPT-2's attention and MLP layers are ``Conv1D`` (a linear layer with its weight stored transposed); both
kinds are supported.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import cast

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from maas.errors import InvalidInput


class LoRALinear(nn.Module):
    """A frozen linear (or GPT-2 ``Conv1D``) layer plus a trainable low-rank update."""

    def __init__(self, base: nn.Module, *, r: int, alpha: float, dropout: float) -> None:
        super().__init__()
        self.base = base
        self.transposed = isinstance(base, Conv1D)  # Conv1D stores (in, out)
        weight = cast(torch.Tensor, base.weight)
        in_features, out_features = (weight.shape[0], weight.shape[1]) if self.transposed else weight.shape[::-1]
        self.scale = alpha / r
        self.lora_a = nn.Parameter(torch.empty(r, in_features, dtype=weight.dtype))
        self.lora_b = nn.Parameter(torch.zeros(out_features, r, dtype=weight.dtype))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as nn.Linear initialises its weight
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        for parameter in base.parameters():
            parameter.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = cast(torch.Tensor, self.base(x))
        update = cast(torch.Tensor, self.dropout(x)) @ self.lora_a.T @ self.lora_b.T
        return out + update * self.scale

    def merged(self) -> nn.Module:
        """The base layer with the update folded into its weight."""
        with torch.no_grad():
            delta = (self.lora_b @ self.lora_a) * self.scale  # (out, in)
            weight = cast(torch.Tensor, self.base.weight)
            weight += delta.T if self.transposed else delta
        weight.requires_grad_(True)
        return self.base


def _set_child(model: nn.Module, dotted: str, module: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def apply(model: nn.Module, *, targets: Iterable[str], r: int, alpha: float, dropout: float) -> list[str]:
    """Freeze ``model`` and wrap every linear layer whose last name part is in ``targets``; returns the
    wrapped layers' names. InvalidInput when no layer matches (the names to choose from are listed)."""
    wanted = set(targets)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    linear_names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear | Conv1D) and name]
    chosen = [name for name in linear_names if name.rpartition(".")[2] in wanted]
    if not chosen:
        available = sorted({name.rpartition(".")[2] for name in linear_names})
        raise InvalidInput(
            f"lora_target_modules {sorted(wanted)} match no linear layer of this model; its layers are "
            f"{', '.join(available)}",
            errors=[{"loc": ["hyperparameters", "lora_target_modules"], "msg": "no matching layer"}],
        )
    for name in chosen:
        _set_child(model, name, LoRALinear(model.get_submodule(name), r=r, alpha=alpha, dropout=dropout))
    return chosen


def merge(model: nn.Module) -> None:
    """Fold every adapter into its layer's weight and put the plain layer back."""
    wrapped = [name for name, module in model.named_modules() if isinstance(module, LoRALinear)]
    for name in wrapped:
        layer = model.get_submodule(name)
        assert isinstance(layer, LoRALinear)
        _set_child(model, name, layer.merged())
    for parameter in model.parameters():
        parameter.requires_grad_(True)

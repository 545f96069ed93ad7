"""The torch networks of ``recommender-mf``; imported only by training code.

Both networks answer the generic trainer with a ``[B, 2]`` tensor: column 0 is what the loss compares
(a predicted rating, or a BPR score difference), column 1 the per-row L2 penalty of the factors and biases
that row touched. Regularising only the rows a batch touches is what the SGD of the literature does
(Koren 2009; Surprise's SVD); the optimizer's weight decay would shrink every user and item on every step.
The penalty is zero in eval mode, so validation losses are the plain error.
"""

from __future__ import annotations

import torch
from torch import nn


def _embedding(rows: int, width: int, std: float) -> nn.Embedding:
    table = nn.Embedding(rows, width)
    if std > 0:
        nn.init.normal_(table.weight, mean=0.0, std=std)
    else:
        nn.init.zeros_(table.weight)
    return table


class BiasedMF(nn.Module):
    """``rating(u, i) = mu + b_u + b_i + p_u · q_i`` over ``[B, 2]`` int64 rows of (user, item) indices."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        factors: int,
        *,
        global_mean: float,
        init_std: float,
        reg: float,
        bias_reg: float,
    ) -> None:
        super().__init__()
        self.user_factors = _embedding(n_users, factors, init_std)
        self.item_factors = _embedding(n_items, factors, init_std)
        self.user_bias = _embedding(n_users, 1, 0.0)
        self.item_bias = _embedding(n_items, 1, 0.0)
        self.register_buffer("global_mean", torch.tensor(global_mean, dtype=torch.float32))
        self.reg = reg
        self.bias_reg = bias_reg

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        users, items = pairs[:, 0], pairs[:, 1]
        p, q = self.user_factors(users), self.item_factors(items)
        b_u, b_i = self.user_bias(users)[:, 0], self.item_bias(items)[:, 0]
        rating = self.global_mean + b_u + b_i + (p * q).sum(dim=1)
        if not self.training:
            return torch.stack((rating, torch.zeros_like(rating)), dim=1)
        penalty = self.reg * ((p * p).sum(dim=1) + (q * q).sum(dim=1)) + self.bias_reg * (b_u * b_u + b_i * b_i)
        return torch.stack((rating, penalty), dim=1)


class BPRMF(nn.Module):
    """Bayesian personalised ranking (Rendle et al. 2009) over ``[B, 3]`` rows of (user, positive, negative).

    ``score(u, i) = b_i + p_u · q_i``; column 0 of the output is ``score(u, pos) - score(u, neg)``."""

    def __init__(self, n_users: int, n_items: int, factors: int, *, init_std: float, reg: float, bias_reg: float):
        super().__init__()
        self.user_factors = _embedding(n_users, factors, init_std)
        self.item_factors = _embedding(n_items, factors, init_std)
        self.item_bias = _embedding(n_items, 1, 0.0)
        self.reg = reg
        self.bias_reg = bias_reg

    def forward(self, triples: torch.Tensor) -> torch.Tensor:
        p = self.user_factors(triples[:, 0])
        q_pos, q_neg = self.item_factors(triples[:, 1]), self.item_factors(triples[:, 2])
        b_pos, b_neg = self.item_bias(triples[:, 1])[:, 0], self.item_bias(triples[:, 2])[:, 0]
        difference = b_pos - b_neg + (p * (q_pos - q_neg)).sum(dim=1)
        if not self.training:
            return torch.stack((difference, torch.zeros_like(difference)), dim=1)
        penalty = self.reg * ((p * p).sum(dim=1) + (q_pos * q_pos).sum(dim=1) + (q_neg * q_neg).sum(dim=1))
        penalty = penalty + self.bias_reg * (b_pos * b_pos + b_neg * b_neg)
        return torch.stack((difference, penalty), dim=1)


def rating_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Squared error plus the rows' penalty (zero in eval mode: validation loss is the MSE)."""
    error = outputs[:, 0] - targets
    return (error * error + outputs[:, 1]).mean()


def bpr_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``-log sigmoid(x_uij)`` plus the penalty; ``targets`` are unused placeholders (the trainer wants a pair)."""
    del targets
    return (-nn.functional.logsigmoid(outputs[:, 0]) + outputs[:, 1]).mean()


def build_network(
    task: str,
    n_users: int,
    n_items: int,
    *,
    factors: int,
    init_std: float,
    reg: float,
    bias_reg: float,
    global_mean: float,
    seed: int,
) -> nn.Module:
    """Weights drawn from ``seed`` (deterministic, the global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if task == "rating":
            return BiasedMF(
                n_users, n_items, factors, global_mean=global_mean, init_std=init_std, reg=reg, bias_reg=bias_reg
            )
        return BPRMF(n_users, n_items, factors, init_std=init_std, reg=reg, bias_reg=bias_reg)

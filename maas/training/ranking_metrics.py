"""Top-k ranking metrics for recommenders: precision@k, recall@k and NDCG@k (binary relevance).

For each evaluated user the model ranks every item it knows except those the user interacted with in
training; the user's relevant held-out items are what it should find. Users without a relevant held-out
item are left out (their recall is undefined), as in most of the literature (e.g. RecBole, Microsoft
Recommenders' ``precision_at_k``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# Scores of all items for a block of user indices: [len(users), n_items].
ScoreBlock = Callable[[np.ndarray], np.ndarray]

_BLOCK = 512


def csr_from_pairs(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """``(indptr, indices)`` of the distinct (user, item) pairs, items sorted within each user."""
    keys = np.unique(users.astype(np.int64) * n_items + items.astype(np.int64))
    rows, cols = keys // n_items, keys % n_items
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.add.at(indptr, rows + 1, 1)
    return np.cumsum(indptr), cols.astype(np.int64)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` highest scores per row, best first."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def ranking_report(
    score_block: ScoreBlock,
    seen: tuple[np.ndarray, np.ndarray],
    relevant: tuple[np.ndarray, np.ndarray],
    k: int,
) -> dict[str, float | int]:
    """Mean precision@k, recall@k and NDCG@k over users with at least one relevant item.

    ``seen`` and ``relevant`` are CSR ``(indptr, indices)`` over the same user indices: training
    interactions (excluded from the ranking) and the held-out relevant items."""
    seen_ptr, seen_idx = seen
    rel_ptr, rel_idx = relevant
    users = np.flatnonzero(np.diff(rel_ptr) > 0)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    precision = recall = ndcg = 0.0
    for start in range(0, len(users), _BLOCK):
        block = users[start : start + _BLOCK]
        scores = np.array(score_block(block), dtype=np.float64)
        for row, user in enumerate(block):
            scores[row, seen_idx[seen_ptr[user] : seen_ptr[user + 1]]] = -np.inf
        ranked = top_k(scores, k)
        for row, user in enumerate(block):
            wanted = rel_idx[rel_ptr[user] : rel_ptr[user + 1]]
            hits = np.isin(ranked[row], wanted)
            precision += hits.sum() / k
            recall += hits.sum() / len(wanted)
            ideal = discounts[: min(len(wanted), k)].sum()
            ndcg += float(discounts[: len(hits)][hits].sum() / ideal)
    n = max(len(users), 1)
    return {
        f"precision@{k}": float(precision / n),
        f"recall@{k}": float(recall / n),
        f"ndcg@{k}": float(ndcg / n),
        "ranking_users": len(users),
    }

"""Filtered ranks and the metrics built from them (PyKEEN-style ``process`` then ``finalize``).

Tie rule: the realistic rank, the mean of the optimistic and pessimistic ranks, i.e.
``1 + #(candidates scoring higher) + #(other candidates scoring equal) / 2``; a constant
scorer thus gets the expected rank of a random one, never rank 1.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable

import numpy as np
import torch


def realistic_ranks(scores: torch.Tensor, true_cols: torch.Tensor, filtered: list[Iterable[int]]) -> np.ndarray:
    """(B,) ranks of each row's true column, after removing the row's other known answers.

    scores: (B, N); true_cols: (B,); filtered[b]: columns that are also correct for row b.
    """
    scores = scores.clone().float()
    for b, cols in enumerate(filtered):
        others = [c for c in cols if c != int(true_cols[b])]
        if others:
            scores[b, others] = float("-inf")
    true = scores.gather(1, true_cols[:, None])  # (B, 1)
    higher = (scores > true).sum(dim=1)
    equal = (scores == true).sum(dim=1) - 1  # not counting the true answer itself
    return (1 + higher.double() + equal.double() / 2).numpy()


class RankEvaluator:
    """Collects ranks, then reports MRR, Hits@k and mean rank under a name prefix."""

    def __init__(self, prefix: str = "", ks: tuple[int, ...] = (1, 3, 10)):
        self.prefix, self.ks = prefix, ks
        self.ranks: list[np.ndarray] = []

    def process(self, ranks: np.ndarray) -> None:
        self.ranks.append(np.asarray(ranks, dtype=np.float64))

    def finalize(self) -> dict[str, float]:
        if not self.ranks:
            return {}
        ranks = np.concatenate(self.ranks)
        metrics = {f"{self.prefix}mrr": float(np.mean(1.0 / ranks)), f"{self.prefix}mean_rank": float(ranks.mean())}
        for k in self.ks:
            metrics[f"{self.prefix}hits@{k}"] = float(np.mean(ranks <= k))
        return metrics


class KnownTriplets:
    """Every true (h, r, t) of a KG, indexed for filtering: answers to (h, r, ?), (?, r, t), (h, ?, t)."""

    def __init__(self, heads: np.ndarray, rels: np.ndarray, tails: np.ndarray):
        self.tails_of: dict[tuple[int, int], set[int]] = defaultdict(set)
        self.heads_of: dict[tuple[int, int], set[int]] = defaultdict(set)
        self.rels_of: dict[tuple[int, int], set[int]] = defaultdict(set)
        for h, r, t in zip(heads.tolist(), rels.tolist(), tails.tolist()):
            self.tails_of[(h, r)].add(t)
            self.heads_of[(r, t)].add(h)
            self.rels_of[(h, t)].add(r)


def recall_at(similarity: torch.Tensor, positives: list[set[int]], ks: Iterable[int]) -> dict[int, float]:
    """Retrieval recall@k: the share of rows with a positive column among their top k."""
    ks = list(ks)
    top = similarity.topk(min(max(ks), similarity.shape[1]), dim=1).indices.tolist()
    return {k: float(np.mean([bool(set(row[:k]) & pos) for row, pos in zip(top, positives)])) for k in ks}

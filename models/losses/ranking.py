"""The softmax-over-candidates loss all Knowledge-CLIP objectives share, and in-batch filtering."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def ranking_loss(
    queries: torch.Tensor,  # (B, D)
    candidates: torch.Tensor,  # (C, D)
    targets: torch.Tensor,  # (B,) long, rows into candidates
    logit_scale: torch.Tensor | float,
    known: torch.Tensor | None = None,  # (B, C) bool: other true answers, left out of the softmax
) -> torch.Tensor:
    """Mean cross-entropy of each query picking its target by scaled cosine similarity."""
    q = F.normalize(queries.float(), dim=-1)
    c = F.normalize(candidates.float(), dim=-1)
    logits = logit_scale * q @ c.T  # (B, C)
    if known is not None:
        # Filtered setting, as in link-prediction evaluation: another true tail of the same
        # (h, r) in the batch is not a negative. The target itself is never in ``known``.
        logits = logits.masked_fill(known, float("-inf"))
    return F.cross_entropy(logits, targets)


def batch_known(keys: tuple[torch.Tensor, ...], answers: torch.Tensor, num_candidates: int) -> torch.Tensor:
    """(B, C) bool: candidate c answers another batch row with the same keys, and is not this row's answer.

    E.g. keys (heads, rels), answers tails: the other true tails of each (h, r) present in the batch.
    """
    B = answers.shape[0]
    same = torch.ones(B, B, dtype=torch.bool, device=answers.device)  # (B, B)
    for key in keys:
        same = same & (key[:, None] == key[None, :])
    own = F.one_hot(answers, num_candidates).to(torch.float32)  # (B, C)
    known = (same.to(torch.float32) @ own) > 0  # (B, C)
    return known & ~own.bool()

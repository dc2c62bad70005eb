"""E2E (entity-entity): the masked triplet's output picks the true entity among the batch's entities.

The paper only describes masking the tail. We also mask the head, (?, r, t), and average the two
directions, so the same model ranks heads and tails in link prediction (docs/METHOD.md, 5.1 and 9).
"""

from __future__ import annotations

import torch

from kclip.models.losses.ranking import batch_known, ranking_loss


def e2e_loss(
    tail_queries: torch.Tensor,  # (B, D) fused (h, r, [mask]) outputs, projected to the CLIP embedding
    head_queries: torch.Tensor | None,  # (B, D) fused ([mask], r, t) outputs, or None for tails only
    entities: torch.Tensor,  # (E, D) pooled CLIP embeddings of the batch's unique entities
    heads: torch.Tensor,  # (B,) rows into entities
    rels: torch.Tensor,  # (B,)
    tails: torch.Tensor,  # (B,)
    logit_scale: torch.Tensor | float,
) -> dict[str, torch.Tensor]:
    E = entities.shape[0]
    loss = ranking_loss(tail_queries, entities, tails, logit_scale, batch_known((heads, rels), tails, E))
    if head_queries is not None:
        head_loss = ranking_loss(head_queries, entities, heads, logit_scale, batch_known((tails, rels), heads, E))
        loss = (loss + head_loss) / 2
    return {"e2e": loss}

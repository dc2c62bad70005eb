"""G2E (graph-entity): each entity's propagated feature must pick its own pre-propagation feature.

Cosine similarity over a temperature, contrasted against the batch's other entities (InfoNCE),
one direction as the paper words it (propagated -> original). Both sides keep their gradients:
the towers learn features their graph neighbourhood predicts, the GNN learns to predict them.
Method: docs/METHOD.md (section 5.4).
"""

from __future__ import annotations

import torch

from kclip.models.losses.ranking import ranking_loss


def g2e_loss(
    propagated: torch.Tensor,  # (E, D) GNN output at the batch's entities
    original: torch.Tensor,  # (E, D) the same entities' features before propagation
    logit_scale: torch.Tensor | float,
) -> dict[str, torch.Tensor]:
    targets = torch.arange(original.shape[0], device=original.device)
    return {"g2e": ranking_loss(propagated, original, targets, logit_scale)}

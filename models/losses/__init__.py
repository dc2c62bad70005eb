"""Knowledge-CLIP's objectives, one small module each; every function returns ``{name: scalar}``.

- ``e2e``: entity-entity, (h, r, ?) and (?, r, t) pick the true entity among the batch's entities;
- ``e2r``: entity-relation, (h, ?, t) picks the true relation among the candidate relations;
- ``g2e``: graph-entity, an entity's GNN-propagated feature picks its own pre-propagation feature;
- ``kd``: knowledge distillation, KL between the frozen teacher's and the student's similarity
  distributions: over all of a batch's entities, and over its image-text pairs where it has some;
- ``itc``: CLIP's own image-text contrastive loss (the plain-CLIP fine-tuning baseline).
Features go in unnormalised; each loss L2-normalises them and computes in float32, so the terms are
safe under bf16 autocast. ``logit_scale`` is the multiplier (1 / temperature), not its log.
Method: docs/METHOD.md (section 5, objectives; section 6, total loss and weights).
"""

from kclip.models.losses.e2e import e2e_loss
from kclip.models.losses.e2r import e2r_loss
from kclip.models.losses.g2e import g2e_loss
from kclip.models.losses.itc import itc_loss
from kclip.models.losses.kd import kd_loss, structure_kd_loss
from kclip.models.losses.ranking import batch_known, ranking_loss

__all__ = ["e2e_loss", "e2r_loss", "g2e_loss", "itc_loss", "kd_loss", "structure_kd_loss", "batch_known", "ranking_loss"]

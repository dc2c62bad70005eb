"""KD: keep the student's similarity distributions close to the frozen teacher's.

Two kinds, both KL(teacher || student) over softmax(similarity * logit_scale):
- ``kd_loss``, over a batch's image-text pairs: image->text and text->image, averaged;
- ``structure_kd_loss``, over all of a batch's entities, texts and images alike: each entity's
  distribution over the others, so a batch with no pair at all (a language KG) still keeps what
  the teacher knew about how its entities relate. Unlike open_clip's DistillClipLoss (a cross-entropy, which never reaches zero) this is a
true KL: exactly 0 while the student still equals the teacher. Each model uses its own
logit_scale, as each would at inference.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def kd_loss(
    student_image: torch.Tensor,  # (P, D)
    student_text: torch.Tensor,  # (P, D)
    student_scale: torch.Tensor | float,
    teacher_image: torch.Tensor,  # (P, D)
    teacher_text: torch.Tensor,  # (P, D)
    teacher_scale: torch.Tensor | float,
) -> dict[str, torch.Tensor]:
    student = student_scale * _cosine(student_image, student_text)  # (P, P) image -> text logits
    teacher = (teacher_scale * _cosine(teacher_image, teacher_text)).detach()
    i2t = _kl(teacher, student)
    t2i = _kl(teacher.T, student.T)
    return {"kd": (i2t + t2i) / 2}


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T


def _kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """Mean over rows of KL(softmax(teacher) || softmax(student))."""
    student = F.log_softmax(student_logits, dim=-1)
    teacher = F.log_softmax(teacher_logits, dim=-1)
    return F.kl_div(student, teacher, log_target=True, reduction="batchmean")


def structure_kd_loss(
    student: torch.Tensor,  # (E, D) pooled embeddings of a batch's entities, either modality
    student_scale: torch.Tensor | float,
    teacher: torch.Tensor,  # (E, D) the teacher's of the same entities
    teacher_scale: torch.Tensor | float,
) -> dict[str, torch.Tensor]:
    """KL over each entity's similarities to the other entities (itself left out); needs E >= 3,
    since with two entities each row has a single choice and nothing to compare."""
    n = student.shape[0]
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=student.device)
    s = (student_scale * _cosine(student, student))[off_diagonal].view(n, n - 1)
    t = (teacher_scale * _cosine(teacher, teacher)).detach()[off_diagonal].view(n, n - 1)
    return {"kd": _kl(t, s)}

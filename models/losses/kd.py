"""KD: keep the student's image-text similarity distributions close to the frozen teacher's.

KL(teacher || student) over softmax(similarity * logit_scale), image->text and text->image,
averaged. Unlike open_clip's DistillClipLoss (a cross-entropy, which never reaches zero) this is a
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

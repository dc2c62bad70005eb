"""Using a trained run: load its model, embed a KG's entities, and score link and relation queries.

Shared by evaluation, prediction (``kclip predict``, the UI) and ``kclip embed``. A model trained
without the E2E or E2R head (the plain-CLIP baseline, or an ablation) is scored by a translation
rule in CLIP's embedding space instead: tail ~ normalize(e_h + e_r), relation ~ cos(e_h + e_r, e_t).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from kclip.models.batch import TripletBatch
from kclip.models.features import Featurizer, featurizer_for
from kclip.models.knowledge_clip import KnowledgeCLIP
from kclip.models.train import latest_checkpoint, load_checkpoint
from kclip.models.train_config import TrainConfig
from kclip.platform.errors import NotFoundError
from kclip.platform.graph_store import EntityRow, GraphStore
from kclip.platform.progress import Progress
from kclip.platform.settings import Settings


@dataclass
class LoadedRun:
    name: str
    kg: str
    step: int
    config: TrainConfig
    model: KnowledgeCLIP
    featurizer: Featurizer
    device: torch.device


def load_run(settings: Settings, run_name: str, device: str | torch.device = "cpu") -> LoadedRun:
    """A run's latest checkpoint as an eval-mode model with its featurizer."""
    path = latest_checkpoint(settings.runs_root / run_name)
    if path is None:
        raise NotFoundError(f"run {run_name!r} has no checkpoint under {settings.runs_root / run_name}; "
                            "train it first (kclip train --run NAME ...)")
    device = torch.device(device)
    checkpoint = load_checkpoint(path, device)
    config = TrainConfig.model_validate(checkpoint["config"])
    model = KnowledgeCLIP(config.model, config.losses)
    model.load_state_dict(checkpoint["model"])
    model.to(device).eval()
    featurizer = featurizer_for(model, settings.media_root, config.data.max_text_tokens)
    return LoadedRun(run_name, checkpoint["kg"], checkpoint["position"]["step"], config, model, featurizer, device)


@dataclass
class EntityEmbeddings:
    """Unit-norm pooled embeddings of a KG's entities; row i is entity ``idx[i]``."""

    idx: np.ndarray  # (N,) int64, ascending
    vectors: torch.Tensor  # (N, D) float32
    modality: np.ndarray  # (N,) "text" | "image"

    def rows(self, idxs: Sequence[int] | np.ndarray) -> np.ndarray:
        return np.searchsorted(self.idx, np.asarray(idxs, dtype=np.int64))


@torch.no_grad()
def embed_rows(run: LoadedRun, rows: Sequence[EntityRow]) -> torch.Tensor:
    """(len(rows), D) unit-norm embeddings, in the order of ``rows``."""
    tokens, text_pos, images, image_pos = run.featurizer.entity_tensors(rows)
    out = torch.zeros(len(rows), run.model.embed_dim)
    if text_pos:
        out[text_pos] = run.model.entity_embeddings(text_tokens=tokens.to(run.device)).float().cpu()
    if image_pos:
        out[image_pos] = run.model.entity_embeddings(images=images.to(run.device)).float().cpu()
    return out


def embed_kg(run: LoadedRun, store: GraphStore, kg: str, batch_size: int = 256, progress: bool = True) -> EntityEmbeddings:
    """Embed every entity of ``kg`` (reading them from Neo4j page by page, in idx order)."""
    lo, hi, count = store.entity_idx_range(kg)
    idx, vectors, modality = [], [], []
    with Progress(f"embedding {kg}", total=count, unit="entities", enabled=progress) as bar:
        for start in range(lo, hi + 1, batch_size * 4):
            page = store.entities_page(kg, start, start + batch_size * 4)
            for i in range(0, len(page), batch_size):
                chunk = page[i:i + batch_size]
                vectors.append(embed_rows(run, chunk))
                idx += [r.idx for r in chunk]
                modality += [r.modality for r in chunk]
                bar.advance(len(chunk))
    dim = run.model.embed_dim
    return EntityEmbeddings(np.asarray(idx, dtype=np.int64),
                            torch.cat(vectors) if vectors else torch.zeros(0, dim), np.asarray(modality))


@torch.no_grad()
def link_queries(run: LoadedRun, batch: TripletBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(tail queries, head queries), each (B, D) unit-norm, to dot against entity embeddings."""
    model, batch = run.model, batch.to(run.device)
    if model.entity_head is not None:
        tails, heads = model.link_queries(batch)
        return tails.float().cpu(), heads.float().cpu()
    entity, relation = _pooled(run, batch)
    tail_q = F.normalize(entity[batch.heads] + relation[batch.rels], dim=-1)
    head_q = F.normalize(entity[batch.tails] - relation[batch.rels], dim=-1)
    return tail_q.cpu(), head_q.cpu()


@torch.no_grad()
def relation_scores(run: LoadedRun, batch: TripletBatch) -> torch.Tensor:
    """(B, R) scores of every candidate relation for each (h, ?, t)."""
    model, batch = run.model, batch.to(run.device)
    if model.relation_head is not None:
        return model.relation_logits(batch).float().cpu()
    entity, relation = _pooled(run, batch)
    moved = F.normalize(entity[batch.heads][:, None, :] + relation[None, :, :], dim=-1)  # (B, R, D)
    return (moved @ entity[batch.tails][:, :, None]).squeeze(-1).cpu()


def _pooled(run: LoadedRun, batch: TripletBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(E, D) entity and (R, D) relation embeddings of a batch, unit-norm."""
    model = run.model
    entity = torch.zeros(batch.num_entities, model.embed_dim, device=run.device)
    if batch.text_rows.numel():
        entity[batch.text_rows] = model.entity_embeddings(text_tokens=batch.text_tokens).float()
    if batch.image_rows.numel():
        entity[batch.image_rows] = model.entity_embeddings(images=batch.images).float()
    relation = model.entity_embeddings(text_tokens=batch.relation_tokens).float()
    return entity, relation

"""Using a trained run: load its model, embed a KG's entities, and score link and relation queries.

Shared by evaluation, prediction (``kclip predict``, the UI) and ``kclip embed``. A model trained
without the E2E or E2R head (the plain-CLIP baseline, or an ablation) is scored by a translation
rule in CLIP's embedding space instead: tail ~ normalize(e_h + e_r), relation ~ cos(e_h + e_r, e_t).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np
import torch
from PIL import Image
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
    model = KnowledgeCLIP(config.model, config.losses, load_pretrained=False)  # the checkpoint has every weight
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
    # By idx: what was encoded, so callers need not read it again; empty when read back from Neo4j.
    entities: dict[int, EntityRow] = field(default_factory=dict)
    source: Literal["encoded", "neo4j"] = "encoded"  # "neo4j": `kclip embed`'s vectors, nothing encoded

    def rows(self, idxs: Sequence[int] | np.ndarray) -> np.ndarray:
        return np.searchsorted(self.idx, np.asarray(idxs, dtype=np.int64))


@torch.no_grad()
def embed_rows(run: LoadedRun, rows: Sequence[EntityRow]) -> torch.Tensor:
    """(len(rows), D) unit-norm embeddings, in the order of ``rows``, on the CPU."""
    tokens, text_pos, images, image_pos = run.featurizer.entity_tensors(rows)
    idx = torch.as_tensor([r.idx for r in rows], dtype=torch.long)
    return _pooled(run, idx, tokens, text_pos, images, image_pos).cpu()


def _pooled(run: LoadedRun, entity_idx: torch.Tensor, tokens: torch.Tensor, text_pos, images: torch.Tensor,
            image_pos) -> torch.Tensor:
    """(n, D) unit-norm embeddings of KG entities (content plus learned vector, as E2E trained
    them) whose content sits at text_pos / image_pos."""
    model = run.model
    out = torch.zeros(entity_idx.shape[0], model.embed_dim, device=run.device)
    if len(text_pos):
        out[text_pos] = model.entity_embeddings(text_tokens=tokens.to(run.device))
    if len(image_pos):
        out[image_pos] = model.entity_embeddings(images=images.to(run.device))
    return F.normalize(model.with_learned(out, entity_idx.to(run.device)), dim=-1)


def embed_kg(run: LoadedRun, store: GraphStore, kg: str, batch_size: int = 256, progress: bool = True) -> EntityEmbeddings:
    """Embed every entity of ``kg`` (reading them from Neo4j page by page, in idx order)."""
    lo, hi, count = store.entity_idx_range(kg)
    rows: dict[int, EntityRow] = {}
    vectors = []
    with Progress(f"embedding {kg}", total=count, unit="entities", enabled=progress) as bar:
        for start in range(lo, hi + 1, batch_size * 4):
            page = store.entities_page(kg, start, start + batch_size * 4)
            for i in range(0, len(page), batch_size):
                chunk = page[i:i + batch_size]
                vectors.append(embed_rows(run, chunk))
                rows.update((r.idx, r) for r in chunk)
                bar.advance(len(chunk))
    ordered = list(rows.values())  # pages come in idx order
    return EntityEmbeddings(np.asarray([r.idx for r in ordered], dtype=np.int64),
                            torch.cat(vectors) if vectors else torch.zeros(0, run.model.embed_dim),
                            np.asarray([r.modality for r in ordered]), rows)


def stored_embeddings(store: GraphStore, kg: str) -> EntityEmbeddings:
    """The vectors ``kclip embed`` wrote to Neo4j, read back in bulk (seconds, where encoding a
    large KG again on a CPU takes a minute). Check ``GraphStore.embedding_origin`` first: only the
    run that wrote them can use them."""
    idx, modality, vectors = store.embedding_vectors(kg)
    return EntityEmbeddings(idx, torch.from_numpy(vectors), modality, source="neo4j")


@torch.no_grad()
def embed_texts(run: LoadedRun, texts: Sequence[str]) -> torch.Tensor:
    """(len(texts), D) unit-norm embeddings of free texts, as the run embeds text entities."""
    tokens = run.featurizer.tokens(list(texts)).to(run.device)
    return run.model.entity_embeddings(text_tokens=tokens).float().cpu()


@torch.no_grad()
def embed_images(run: LoadedRun, images: Sequence[Image.Image]) -> torch.Tensor:
    """(len(images), D) unit-norm embeddings of images (RGB), as the run embeds image entities."""
    pixels = torch.stack([run.featurizer.preprocess(image) for image in images]).to(run.device)
    return run.model.entity_embeddings(images=pixels).float().cpu()


@torch.no_grad()
def score_batch(run: LoadedRun, batch: TripletBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(tail queries (B, D), head queries (B, D), relation cosines (B, R)), on the CPU.

    Queries are unit-norm: dotted against entity embeddings they give cosines too, so tails, heads
    and relations share one scale, [-1, 1]. Heads a model lacks (the plain-CLIP baseline,
    ablations) fall back to the translation rule in the module docstring.
    """
    batch = batch.to(run.device)
    asked = run.model.queries(batch)
    if asked.relation_logits is not None:  # the E2R head's logits are its learnt scale x cosine
        asked.relation_logits = asked.relation_logits / run.model.scales["e2r"]()
    if asked.tails is None or asked.relation_logits is None:
        entity = _pooled(run, batch.entity_idx, batch.text_tokens, batch.text_rows, batch.images, batch.image_rows)
        relation = run.model.entity_embeddings(text_tokens=batch.relation_tokens).float()
        if asked.tails is None:
            asked.tails = F.normalize(entity[batch.heads] + relation[batch.rels], dim=-1)
            asked.heads = F.normalize(entity[batch.tails] - relation[batch.rels], dim=-1)
        if asked.relation_logits is None:
            moved = F.normalize(entity[batch.heads][:, None, :] + relation[None, :, :], dim=-1)  # (B, R, D)
            asked.relation_logits = (moved @ entity[batch.tails][:, :, None]).squeeze(-1)
    return asked.tails.float().cpu(), asked.heads.float().cpu(), asked.relation_logits.float().cpu()

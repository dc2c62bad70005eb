"""Knowledge-CLIP: CLIP's two towers, a fusion transformer and a relational GNN, trained on KG triplets.

    config = ModelConfig(clip="kclip-tiny")                  # or clip="ViT-B-32", pretrained="/path/model.bin"
    model = KnowledgeCLIP(config, LossWeights(kd=0.0))
    out = model(batch)                                       # a TripletBatch from the sampler
    out["loss"].backward()                                   # also out["e2e"], out["e2r"], out["g2e"], ...

Only the parts the enabled losses need are built (a weight of 0 is an ablation: the term is neither
built nor computed). Parameters a batch cannot reach (no images in it, no subgraph, no image-text
pairs) get a zero-valued gradient through ``_zero_touch``, so DistributedDataParallel runs with
``find_unused_parameters=False``. The frozen KD teacher is part of ``state_dict`` on purpose: with a
random-init start it cannot be rebuilt from the config, and resume must be exact.

For evaluation, compute ``entity_embeddings`` once for all entities (in chunks), then dot each
batch's ``queries(batch)`` (or ``link_queries``) against them; wrap these calls in ``torch.no_grad()``.

Method: docs/METHOD.md (sections 1-8; deviations from the paper: section 9).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn
from torch.nn import functional as F

from kclip.models.batch import SubgraphBatch, TripletBatch
from kclip.models.clip_factory import create_clip, towers_of
from kclip.models.encoders import encode_image_tokens, encode_text_tokens
from kclip.models.fusion import HEAD, REL, TAIL, EntityTokens, FusionEncoder, default_heads
from kclip.models.gnn import RelationalGNN
from kclip.models.losses import e2e_loss, e2r_loss, g2e_loss, itc_loss, kd_loss, structure_kd_loss
from kclip.platform.errors import ConfigError, KclipError

TERMS = ("e2e", "e2r", "g2e", "kd", "itc")
STRUCTURE_TERMS = {"e2e", "e2r", "g2e"}  # the terms that use the learned entity vectors
ENTITY_INIT_NORM = 0.1  # expected norm of a learned entity vector at the start (docs/METHOD.md, 3.2)


class LossWeights(BaseModel):
    """Weight of each term in ``loss``; 0 switches a term off (and skips building its modules)."""

    model_config = ConfigDict(extra="forbid")

    e2e: float = Field(1.0, ge=0)
    e2r: float = Field(1.0, ge=0)
    g2e: float = Field(1.0, ge=0)
    # None: 0.5 when training starts from pretrained weights, else 0. A random-init teacher knows
    # nothing worth preserving; distilling toward it would only slow learning down.
    kd: float | None = Field(None, ge=0)
    itc: float = Field(0.0, ge=0)  # plain CLIP contrastive loss: the "plain CLIP fine-tuning" baseline

    def resolved(self, pretrained: bool) -> LossWeights:
        kd = self.kd if self.kd is not None else (0.5 if pretrained else 0.0)
        weights = self.model_copy(update={"kd": kd})
        if not weights.enabled():
            raise ConfigError(f"every loss weight is 0 ({weights.model_dump()}); enable at least one of {TERMS}")
        return weights

    def enabled(self) -> dict[str, float]:
        """{term: weight} of the terms that are on."""
        return {name: float(getattr(self, name)) for name in TERMS if (getattr(self, name) or 0.0) > 0}


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    clip: str = "kclip-tiny"  # a name from clip_factory.list_models(), or a path to an open_clip JSON config
    pretrained: str | None = None  # a local weights file or an open_clip tag; None = random init
    # Continue from another run (its checkpoint at init_step) or a weights file: ``--init-from``.
    # Set through models/train.py, which fills init_step and takes the run's architecture.
    init_from: str | None = None
    init_step: int | None = None
    fusion_width: int | None = Field(None, gt=0)  # None: the text tower's width
    fusion_layers: int = Field(2, gt=0)
    fusion_heads: int | None = Field(None, gt=0)  # None: width // 64 (CLIP's head size)
    gnn_layers: int = Field(2, gt=0)
    temperature: float = Field(0.07, gt=0)  # initial temperature of E2E, E2R and G2E (CLIP's init)
    learn_temperature: bool = True
    # A learned vector per KG entity, added to its content encoding (docs/METHOD.md, section 3.2):
    # entities whose text says nothing (ids) become learnable, and content still serves entities
    # added after training. "auto": on when the table (entity_rows x embedding dim) holds at most
    # entity_budget numbers; entity_rows is set by `kclip train` from the KG.
    entity_embedding: Literal["auto", "on", "off"] = "auto"
    entity_rows: int | None = Field(None, ge=0)
    entity_budget: int = Field(50_000_000, ge=0)
    # G2E: backpropagate through the neighbours' encodings too. Off by default: neighbours can
    # outnumber batch entities several times, and the batch entities already carry the gradient.
    neighbour_grad: bool = False

    @field_validator("pretrained")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        # `--set model.pretrained=` means random init: not a weights file, and no teacher to distil from.
        return value if value and value.strip() else None

    @model_validator(mode="after")
    def _heads_divide_width(self) -> ModelConfig:
        if self.fusion_width and self.fusion_heads and self.fusion_width % self.fusion_heads:
            raise ValueError(f"fusion_width {self.fusion_width} is not divisible by fusion_heads {self.fusion_heads}")
        return self

    @property
    def starts_trained(self) -> bool:
        """Training starts from trained weights (a weights file or a run): knowledge worth keeping,
        so KD is on unless the losses say otherwise (``LossWeights.resolved``)."""
        return self.pretrained is not None or self.init_from is not None


class Temperature(nn.Module):
    """A logit scale (1 / temperature), learnt in log space and clamped at 100 as in CLIP."""

    def __init__(self, init_temperature: float, learn: bool):
        super().__init__()
        value = torch.tensor(math.log(1 / init_temperature))
        if learn:
            self.log_scale = nn.Parameter(value)
        else:
            self.register_buffer("log_scale", value)

    def forward(self) -> torch.Tensor:
        return self.log_scale.exp().clamp(max=100)


@dataclass
class Queries:
    """What a batch asks: unit-norm E2E queries for (h, r, ?) and (?, r, t), each (B, D), to dot
    against entity embeddings; E2R logits (B, R) over the candidate relations. None: no such head."""

    tails: torch.Tensor | None = None
    heads: torch.Tensor | None = None
    relation_logits: torch.Tensor | None = None


@dataclass
class EncodedEntities:
    pooled: torch.Tensor  # (E, D) what E2E and G2E compare: ``with_learned`` (the raw pooled embedding without a table)
    content: torch.Tensor  # (E, D) the towers' pooled embeddings alone: what CLIP itself computes (ITC, KD)
    tokens: EntityTokens | None  # (E, L, F) in fusion width, when a fusion exists


class KnowledgeCLIP(nn.Module):
    def __init__(self, config: ModelConfig, weights: LossWeights | None = None, load_pretrained: bool = True):
        """``load_pretrained=False`` builds the same network (teacher included) without reading
        ``config.pretrained``: a checkpoint about to be loaded holds every weight, so a run stays
        usable once the original weights file is gone."""
        super().__init__()
        self.config = config
        self.clip, self.preprocess_train, self.preprocess_val, self.tokenizer = create_clip(
            config.clip, config.pretrained if load_pretrained else None
        )
        self.weights = (weights or LossWeights()).resolved(pretrained=config.starts_trained)
        on = self.weights.enabled()
        text_width, image_width, self.embed_dim = towers_of(self.clip)
        self.fusion = self.entity_head = self.relation_head = self.gnn = self.unknown_relation = None
        if "e2e" in on or "e2r" in on:
            width = config.fusion_width or text_width
            heads = config.fusion_heads or default_heads(width)
            self.fusion = FusionEncoder(text_width, image_width, self.embed_dim, width, config.fusion_layers, heads)
            # Linear heads from the fusion width back into CLIP's embedding space, where the
            # entity and relation candidates live.
            self.entity_head = nn.Linear(width, self.embed_dim) if "e2e" in on else None
            self.relation_head = nn.Linear(width, self.embed_dim) if "e2r" in on else None
        if "g2e" in on:
            self.gnn = RelationalGNN(self.embed_dim, config.gnn_layers)
            # Edges whose relation is not among the batch's candidates use this learnt vector.
            self.unknown_relation = nn.Parameter(torch.randn(self.embed_dim) * self.embed_dim**-0.5)
        contrastive = [name for name in ("e2e", "e2r", "g2e") if name in on]
        self.scales = nn.ModuleDict(
            {name: Temperature(config.temperature, config.learn_temperature) for name in contrastive}
        )
        self.teacher = None
        if "kd" in on:
            self.teacher = copy.deepcopy(self.clip).eval().requires_grad_(False)
        if "kd" not in on and "itc" not in on:
            self.clip.logit_scale.requires_grad_(False)  # nothing uses CLIP's own temperature
        self.entity_table = self.entity_to_fusion = None
        # Only E2E, E2R and G2E read the learned vectors; ITC and KD alone leave them untrained.
        rows = entity_table_rows(config, self.embed_dim) if STRUCTURE_TERMS & set(on) else 0
        if rows:
            # Built last, so the other modules draw the same random init with or without it. Rows
            # start small (norm 0.1 beside unit content embeddings: a run from CLIP begins within
            # cos 0.995 of CLIP's) but random: from zero, every row's gradient points the same few
            # ways and learning stalls (an id-only ring KG: ~350 steps at chance, vs ~100).
            self.entity_table = nn.Embedding(rows, self.embed_dim)
            nn.init.normal_(self.entity_table.weight, std=ENTITY_INIT_NORM / self.embed_dim**0.5)
            if self.fusion is not None:
                self.entity_to_fusion = nn.Linear(self.embed_dim, self.fusion.width, bias=False)

    def train(self, mode: bool = True) -> KnowledgeCLIP:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # the teacher stays the frozen original, dropout and all
        return self

    # ---- training -------------------------------------------------------------------------------

    def forward(self, batch: TripletBatch) -> dict[str, torch.Tensor]:
        """Each enabled term, unweighted, under its name; ``loss`` is their weighted sum."""
        on = self.weights.enabled()
        unreached: list[nn.Module | torch.Tensor] = []  # what this batch cannot reach (see _zero_touch)
        entities = self._encode_entities(batch, unreached)
        relations = self._encode_relations(batch) if self.fusion is not None or self.gnn is not None else None
        terms: dict[str, torch.Tensor] = {}
        if self.fusion is not None:
            terms.update(self._fusion_terms(batch, entities, relations, unreached))
        if self.gnn is not None:
            terms["g2e"] = self._g2e_term(batch, entities.pooled, relations, unreached)
        if "kd" in on or "itc" in on:
            terms.update(self._pair_terms(batch, entities.content, unreached))
        if self.entity_table is not None and self.fusion is None and self.gnn is None:
            unreached.append(self.entity_table)  # ITC and KD see content only
        loss = sum(on[name] * term for name, term in terms.items()) + _zero_touch(unreached)
        return {**terms, "loss": loss}

    def _encode_entities(self, batch: TripletBatch, unreached: list) -> EncodedEntities:
        """Encode each unique entity once: pooled embeddings, and fusion tokens when a fusion exists."""
        E = batch.num_entities
        if batch.text_rows.numel() + batch.image_rows.numel() != E or E == 0:
            raise KclipError(
                f"batch has {E} entities but {batch.text_rows.numel()} text and {batch.image_rows.numel()} "
                "image rows; every entity needs exactly one content row (TripletBatch.text_rows/image_rows)"
            )
        text = encode_text_tokens(self.clip, batch.text_tokens) if batch.text_rows.numel() else None
        image = encode_image_tokens(self.clip, batch.images) if batch.image_rows.numel() else None
        if image is None:
            unreached += [self.clip.visual] + ([self.fusion.image_proj] if self.fusion is not None else [])
        if text is None and self.fusion is not None:
            unreached.append(self.fusion.text_proj)
        outputs = ((batch.text_rows, text), (batch.image_rows, image))
        parts = [(rows, out.pooled) for rows, out in outputs if out is not None]
        content = parts[0][1].new_zeros(E, self.embed_dim)  # (E, D)
        for rows, values in parts:
            content = content.index_put((rows,), values.to(content.dtype))
        learned = self.learned_vectors(batch.entity_idx)  # (E, D) or None
        pooled = content if learned is None else self.with_learned(content, batch.entity_idx, learned)
        tokens = None
        if self.fusion is not None:
            tokens = self.fusion.entity_tokens(text, image, batch.text_rows, batch.image_rows, E)
            if learned is not None:
                tokens = _with_learned_token(tokens, self.entity_to_fusion(learned))
        return EncodedEntities(pooled, content, tokens)

    def learned_vectors(self, entity_idx: torch.Tensor) -> torch.Tensor | None:
        """(E, D) each entity's learned vector: zero for idx the table does not cover (entities added
        after training, or not of this KG: idx -1); None without a table."""
        if self.entity_table is None:
            return None
        rows = self.entity_table.num_embeddings
        known = (entity_idx >= 0) & (entity_idx < rows)
        vectors = self.entity_table(torch.where(known, entity_idx, 0))
        return vectors * known[:, None].to(vectors.dtype)

    def with_learned(self, pooled: torch.Tensor, entity_idx: torch.Tensor,
                     learned: torch.Tensor | None = None) -> torch.Tensor:
        """The embedding E2E and G2E use (E, D): the unit content embedding plus the entity's learned
        vector; the content alone without a table. Added to the unit vector, not to the raw pooled
        one: CLIP's pooled norms run to ~20, where a learned vector would need as much before it
        could tell entities apart whose texts say nothing (every "personN" is the same to CLIP)."""
        learned = self.learned_vectors(entity_idx) if learned is None else learned
        if learned is None:
            return pooled
        return F.normalize(pooled.float(), dim=-1).to(pooled.dtype) + learned.to(pooled.dtype)

    def _encode_relations(self, batch: TripletBatch) -> torch.Tensor:
        """(R, D) pooled text embeddings of the candidate relations: x̄_r, and E2R's candidates."""
        return encode_text_tokens(self.clip, batch.relation_tokens).pooled

    def _fuse(
        self, batch: TripletBatch, tokens: EntityTokens, relations: torch.Tensor, slots: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One fusion pass over every triplet once per masked slot: ((S*B, F) at CLS, (S*B, F) at r)."""
        n = len(slots)
        masked = torch.tensor(slots, device=batch.heads.device).repeat_interleave(batch.heads.shape[0])  # (S*B,)
        return self.fusion(
            tokens, relations, batch.heads.repeat(n), batch.rels.repeat(n), batch.tails.repeat(n), masked
        )

    def _fusion_terms(
        self, batch: TripletBatch, entities: EncodedEntities, relations: torch.Tensor, unreached: list
    ) -> dict[str, torch.Tensor]:
        """E2E (tail and head masked) and E2R (relation masked), from a single fusion pass."""
        B = batch.heads.shape[0]
        slots = [TAIL, HEAD] if self.entity_head is not None else []
        slots += [REL] if self.relation_head is not None else []
        triplet, relation = self._fuse(batch, entities.tokens, relations, slots)  # (S*B, F) each
        terms = {}
        if self.entity_head is None:
            unreached.append(entities.pooled)  # E2R alone uses tokens only: the image projection idles
        else:
            queries = self.entity_head(triplet[: 2 * B])  # (2B, D): tails wanted, then heads wanted
            b, scale = batch, self.scales["e2e"]()
            terms.update(e2e_loss(queries[:B], queries[B:], entities.pooled, b.heads, b.rels, b.tails, scale))
        if self.relation_head is not None:
            queries = self.relation_head(relation[-B:])  # (B, D)
            terms.update(e2r_loss(queries, relations, batch.rels, batch.heads, batch.tails, self.scales["e2r"]()))
        return terms

    def _g2e_term(
        self, batch: TripletBatch, pooled: torch.Tensor, relations: torch.Tensor, unreached: list
    ) -> torch.Tensor:
        sub = batch.subgraph
        if sub is None:
            unreached += [self.gnn, self.unknown_relation, self.scales["g2e"], pooled, relations]
            return pooled.new_zeros((), dtype=torch.float32)
        # The subgraph's first nodes are the batch's KG entities; entities of a pairs stream
        # (data.pairs_kg) follow them in the batch and have no neighbourhood.
        in_graph = sub.batch_entities
        original = F.normalize(pooled[:in_graph].float(), dim=-1)  # (E, D)
        x = self._node_features(sub, original, pooled.device)  # (N, D)
        src, dst, rel = sub.edge_index(pooled.device)
        rel_table = torch.cat([F.normalize(relations.float(), dim=-1), self.unknown_relation.float()[None]])  # (R+1, D)
        propagated = self.gnn(x, src, dst, rel_table, _relation_rows(batch.relation_idx, rel))  # (N, D)
        # Only entities with a neighbour in the subgraph have anything propagated to them.
        E = original.shape[0]
        linked = torch.zeros(sub.num_nodes, dtype=torch.bool, device=src.device)
        linked[src] = True
        linked[dst] = True
        linked = linked[:E]
        if int(linked.sum()) < 2:  # a contrast needs two entities
            unreached += [self.gnn, self.unknown_relation, self.scales["g2e"], pooled, relations]
            return pooled.new_zeros((), dtype=torch.float32)
        return g2e_loss(propagated[:E][linked], original[linked], self.scales["g2e"]())["g2e"]

    def _node_features(self, sub: SubgraphBatch, original: torch.Tensor, device: torch.device) -> torch.Tensor:
        """(N, D) unit-norm node features: the batch's entities first (batch order), then neighbours."""
        x = torch.cat([original, original.new_zeros(sub.num_nodes - original.shape[0], original.shape[1])])
        node_idx = sub.graph.ndata["entity_idx"].to(device)
        with torch.set_grad_enabled(self.config.neighbour_grad and torch.is_grad_enabled()):
            for rows, pooled in self._neighbour_content(sub):
                pooled = self.with_learned(pooled.float(), node_idx[rows])
                x = x.index_put((rows,), F.normalize(pooled, dim=-1))
        return x

    def _neighbour_content(self, sub: SubgraphBatch) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """[(subgraph rows, pooled content)] of the neighbours outside the batch, by modality."""
        parts = []
        if sub.neighbour_text_tokens.shape[0]:
            parts.append((sub.neighbour_text_rows, encode_text_tokens(self.clip, sub.neighbour_text_tokens).pooled))
        if sub.neighbour_images.shape[0]:
            parts.append((sub.neighbour_image_rows, self.clip.encode_image(sub.neighbour_images)))
        return parts

    def _pair_terms(self, batch: TripletBatch, pooled: torch.Tensor, unreached: list) -> dict[str, torch.Tensor]:
        """ITC over the batch's image-text pairs (zero without any) and KD (``_kd_term``)."""
        on = self.weights.enabled()
        terms: dict[str, torch.Tensor] = {}
        scale = self.clip.logit_scale.exp().clamp(max=100)
        if "itc" in on:
            if batch.pair_image.numel():
                terms.update(itc_loss(pooled[batch.pair_image], pooled[batch.pair_text], scale))
            else:
                unreached += [self.clip.logit_scale, pooled]
                terms["itc"] = pooled.new_zeros((), dtype=torch.float32)
        if "kd" in on:
            terms["kd"] = self._kd_term(batch, pooled, scale, unreached)
        return terms

    def _kd_term(self, batch: TripletBatch, pooled: torch.Tensor, scale: torch.Tensor, unreached: list) -> torch.Tensor:
        """The mean of KD over all the batch's entities (how each relates to the others, texts and
        images alike) and KD over its image-text pairs, each where the batch has enough for it."""
        with torch.no_grad():
            teacher = self._teacher_pooled(batch)  # (E, D)
        t_scale = self.teacher.logit_scale.exp().clamp(max=100)
        parts = []
        if batch.num_entities >= 3:
            parts.append(structure_kd_loss(pooled, scale, teacher, t_scale)["kd"])
        if batch.pair_image.numel():
            image, text = batch.pair_image, batch.pair_text
            parts.append(kd_loss(pooled[image], pooled[text], scale, teacher[image], teacher[text], t_scale)["kd"])
        if not parts:
            unreached += [self.clip.logit_scale, pooled]
            return pooled.new_zeros((), dtype=torch.float32)
        return sum(parts) / len(parts)

    def _teacher_pooled(self, batch: TripletBatch) -> torch.Tensor:
        """The frozen teacher's (E, D) pooled embeddings of the batch's entities."""
        pooled = None
        if batch.text_rows.numel():
            text = encode_text_tokens(self.teacher, batch.text_tokens).pooled
            pooled = text.new_zeros(batch.num_entities, text.shape[1]).index_put((batch.text_rows,), text)
        if batch.image_rows.numel():
            image = self.teacher.encode_image(batch.images)
            if pooled is None:
                pooled = image.new_zeros(batch.num_entities, image.shape[1])
            pooled = pooled.index_put((batch.image_rows,), image.to(pooled.dtype))
        return pooled

    # ---- inference: wrap in torch.no_grad() ------------------------------------------------------

    def entity_embeddings(
        self, text_tokens: torch.Tensor | None = None, images: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(Nt + Ni, D) unit-norm pooled CLIP embeddings of content, texts first. KG entities, the
        candidates of link prediction, add their learned vectors: models/inference.py ``embed_rows``."""
        parts = []
        if text_tokens is not None and text_tokens.shape[0]:
            parts.append(encode_text_tokens(self.clip, text_tokens).pooled)
        if images is not None and images.shape[0]:
            parts.append(self.clip.encode_image(images))
        if not parts:
            return torch.zeros(0, self.embed_dim, device=self.clip.logit_scale.device)
        return F.normalize(torch.cat([p.float() for p in parts]), dim=-1)

    def tail_queries(self, batch: TripletBatch) -> torch.Tensor:
        """(B, D) unit-norm E2E queries for (h, r, ?): score all tails as ``queries @ entity_embeddings.T``."""
        return self.link_queries(batch)[0]

    def head_queries(self, batch: TripletBatch) -> torch.Tensor:
        """(B, D) unit-norm E2E queries for (?, r, t)."""
        return self.link_queries(batch)[1]

    def link_queries(self, batch: TripletBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(tail queries, head queries), each (B, D), from one encoding and one fusion pass."""
        self._require(self.entity_head, "e2e", "tail/head queries")
        asked = self.queries(batch)
        return asked.tails, asked.heads

    def relation_logits(self, batch: TripletBatch) -> torch.Tensor:
        """(B, R) E2R scores of each candidate relation (batch.relation_tokens) for (h, ?, t)."""
        self._require(self.relation_head, "e2r", "relation prediction")
        return self.queries(batch).relation_logits

    def queries(self, batch: TripletBatch) -> "Queries":
        """Everything this model's heads answer for a batch, from one encoding and one fusion pass
        (evaluation asks for all of it: encoding twice would double its cost)."""
        B = batch.heads.shape[0]
        slots = ([TAIL, HEAD] if self.entity_head is not None else []) + ([REL] if self.relation_head is not None else [])
        if not slots:
            return Queries()
        entities = self._encode_entities(batch, [])
        relations = self._encode_relations(batch)  # (R, D)
        triplet, relation = self._fuse(batch, entities.tokens, relations, slots)  # (S*B, F) each
        out = Queries()
        if self.entity_head is not None:
            both = F.normalize(self.entity_head(triplet[: 2 * B]).float(), dim=-1)  # (2B, D)
            out.tails, out.heads = both[:B], both[B:]
        if self.relation_head is not None:
            asked = F.normalize(self.relation_head(relation[-B:]).float(), dim=-1)  # (B, D)
            out.relation_logits = self.scales["e2r"]() * asked @ F.normalize(relations.float(), dim=-1).T
        return out

    def text_image_similarity(self, text_tokens: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """(Nt, Ni) cosine similarity of pooled CLIP embeddings, for image-text retrieval."""
        text = self.entity_embeddings(text_tokens=text_tokens)
        image = self.entity_embeddings(images=images)
        return text @ image.T

    def _require(self, module: nn.Module | None, term: str, what: str) -> None:
        if module is None:
            raise ConfigError(
                f"{what} needs the {term.upper()} head, but this model was built with loss weight {term}=0; "
                f"use a checkpoint trained with {term} > 0"
            )


def _with_learned_token(tokens: EntityTokens, learned: torch.Tensor) -> EntityTokens:
    """Each entity's learned vector (E, F) as its first token. A token of its own, not added to the
    tower tokens: the fusion's pre-LayerNorm scales it like any token, so the entity's identity is
    visible from the first steps, where a small vector added to tower tokens of norm ~sqrt(width)
    would be drowned out. Never padding (real tokens come first: ``fusion._trim``)."""
    first = learned.to(tokens.tokens.dtype)[:, None, :]  # (E, 1, F)
    padding = torch.cat([tokens.padding.new_zeros(tokens.padding.shape[0], 1), tokens.padding], dim=1)
    return EntityTokens(torch.cat([first, tokens.tokens], dim=1), padding)


def entity_table_rows(config: ModelConfig, embed_dim: int) -> int:
    """Rows of the learned entity table this config builds; 0: none."""
    rows = config.entity_rows or 0
    if config.entity_embedding == "off" or rows == 0:
        return 0
    if config.entity_embedding == "auto" and rows * embed_dim > config.entity_budget:
        return 0
    return rows


def _relation_rows(relation_idx: torch.Tensor, edge_rel: torch.Tensor) -> torch.Tensor:
    """(M,) row of each edge's KG relation among the candidates; R (the unknown row) when absent."""
    R = relation_idx.shape[0]
    if R == 0:
        return torch.zeros_like(edge_rel)
    sorted_idx, order = relation_idx.sort()
    at = torch.searchsorted(sorted_idx, edge_rel).clamp(max=R - 1)  # no host sync, unlike a lookup table
    return torch.where(sorted_idx[at] == edge_rel, order[at], R)


def _zero_touch(parts: Iterable[nn.Module | torch.Tensor]) -> torch.Tensor | float:
    """0 * (one element of each trainable parameter, or of each tensor, in ``parts``).

    Why: DDP without find_unused_parameters waits for a gradient for every parameter. When a batch
    cannot reach some (no images, no subgraph, no pairs, a term that ignores the pooled
    embeddings), this hands them a zero gradient instead of a hang. A tensor part (say, the pooled
    embeddings) reaches every parameter that produced it; a parameter part costs one element.
    """
    touched = []
    for part in parts:
        tensors = part.parameters() if isinstance(part, nn.Module) else [part]
        touched += [t.reshape(-1)[:1].float() for t in tensors if t.requires_grad]
    return torch.cat(touched).sum() * 0.0 if touched else 0.0

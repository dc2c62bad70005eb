"""``kclip predict`` and the UI's Predict page: top-k tails, heads or relations from a trained run.

    predictor = Predictor.from_run(settings, "scenes-...", store)
    predictor.tails("scenes", "object:12", "left of", k=5)      # (h, r, ?)
    predictor.relations("scenes", "object:12", "object:13")     # (h, ?, t)
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch

from kclip.models.batching import triplet_batch
from kclip.models.inference import EntityEmbeddings, LoadedRun, embed_kg, load_run, score_batch
from kclip.platform.errors import NotFoundError
from kclip.platform.graph_store import EntityRow, GraphStore, RelationRow
from kclip.platform.settings import Settings


@dataclass(frozen=True)
class TailPrediction:
    entity: EntityRow
    score: float
    known: bool  # the triplet is already in the KG


@dataclass(frozen=True)
class RelationPrediction:
    relation: RelationRow
    score: float
    known: bool


class Predictor:
    """Safe to share between threads (the UI serves many sessions from one loaded model)."""

    def __init__(self, run: LoadedRun, store: GraphStore):
        self.run, self.store = run, store
        self._lock = threading.RLock()  # guards the model, the featurizer's caches and the tables below
        self._embeddings: dict[str, EntityEmbeddings] = {}
        self._relations: dict[str, list[RelationRow]] = {}

    @classmethod
    def from_run(cls, settings: Settings, run_name: str, store: GraphStore, device: str = "cpu") -> "Predictor":
        return cls(load_run(settings, run_name, device), store)

    def tails(self, kg: str, head_id: str, relation: str, k: int = 10) -> list[TailPrediction]:
        with self._lock:
            return self._tails(kg, head_id, relation, k)

    def heads(self, kg: str, relation: str, tail_id: str, k: int = 10) -> list[TailPrediction]:
        with self._lock:
            return self._heads(kg, relation, tail_id, k)

    def relations(self, kg: str, head_id: str, tail_id: str, k: int = 10) -> list[RelationPrediction]:
        with self._lock:
            return self._relations_between(kg, head_id, tail_id, k)

    def _tails(self, kg: str, head_id: str, relation: str, k: int) -> list[TailPrediction]:
        rel = self._relation(kg, relation)
        head = self.store.entity(kg, head_id).entity
        tail_q, _, _ = score_batch(self.run, self._batch(kg, head, rel, head))  # the masked tail is unused
        return self._top_entities(kg, tail_q[0], k, self.store.known_tails(kg, head_id, rel.idx))

    def _heads(self, kg: str, relation: str, tail_id: str, k: int) -> list[TailPrediction]:
        rel = self._relation(kg, relation)
        tail = self.store.entity(kg, tail_id).entity
        _, head_q, _ = score_batch(self.run, self._batch(kg, tail, rel, tail))
        return self._top_entities(kg, head_q[0], k, self.store.known_heads(kg, rel.idx, tail_id))

    def _relations_between(self, kg: str, head_id: str, tail_id: str, k: int) -> list[RelationPrediction]:
        relations = self.relations_of(kg)
        head, tail = self.store.entity(kg, head_id).entity, self.store.entity(kg, tail_id).entity
        scores = score_batch(self.run, self._batch(kg, head, relations[0], tail))[2][0]  # (R,)
        known = self.store.known_relations(kg, head_id, tail_id)
        top = scores.topk(min(k, len(relations)))
        return [RelationPrediction(relations[i], float(s), relations[i].idx in known)
                for s, i in zip(top.values.tolist(), top.indices.tolist())]

    def embeddings(self, kg: str) -> EntityEmbeddings:
        """Every entity's embedding, computed once per KG and kept."""
        with self._lock:
            if kg not in self._embeddings:
                self._embeddings[kg] = embed_kg(self.run, self.store, kg, progress=False)
            return self._embeddings[kg]

    def relations_of(self, kg: str) -> list[RelationRow]:
        if kg not in self._relations:
            self._relations[kg] = self.store.relations(kg)
        return self._relations[kg]

    def _relation(self, kg: str, name: str) -> RelationRow:
        for r in self.relations_of(kg):
            if r.name == name:
                return r
        raise NotFoundError(f"no relation {name!r} in KG {kg!r}")

    def _batch(self, kg: str, head: EntityRow, rel: RelationRow, tail: EntityRow):
        relations = self.relations_of(kg)
        position = next(i for i, r in enumerate(relations) if r.idx == rel.idx)
        return triplet_batch(self.run.featurizer, [head], [position], [tail], relations)

    def _top_entities(self, kg: str, query: torch.Tensor, k: int, known: set[int]) -> list[TailPrediction]:
        emb = self.embeddings(kg)
        top = (emb.vectors @ query).topk(min(k, len(emb.idx)))
        idxs = [int(emb.idx[i]) for i in top.indices.tolist()]
        rows = {r.idx: r for r in self.store.entity_content(kg, idxs)}
        return [TailPrediction(rows[i], float(s), i in known) for i, s in zip(idxs, top.values.tolist())]

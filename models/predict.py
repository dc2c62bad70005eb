"""``kclip predict`` and the UI's Predict page: top-k tails, heads or relations from a trained run.

    predictor = Predictor.from_run(settings, "scenes-...", store)
    predictor.tails("scenes", "object:12", "left of", k=5)      # (h, r, ?)
    predictor.relations("scenes", "object:12", "object:13")     # (h, ?, t)
    predictor.text_query("scenes", "a red circle")              # a free text in the KG's embedding space

Every score is a cosine similarity in [-1, 1]: the model's fused query for the missing part
against each candidate's CLIP embedding (an entity's, or a relation's text). One scale for all
three questions, independent of how many candidates there are (a softmax over 40,000 entities
and one over 11 relations would not be comparable), and the same measure the Neighbours page shows.

Candidates come from ``kclip embed``'s vectors in Neo4j when this run, at this checkpoint step,
wrote them for the KG's current content (``GraphStore.embedding_origin``); otherwise every entity
is encoded once per KG and kept.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from kclip.models.batching import triplet_batch
from kclip.models.inference import (EntityEmbeddings, LoadedRun, embed_images, embed_kg, embed_texts, load_run,
                                    score_batch, stored_embeddings)
from kclip.platform.errors import KclipError, NotFoundError
from kclip.platform.graph_store import EntityRow, GraphStore, RelationRow
from kclip.platform.settings import Settings


@dataclass(frozen=True)
class TailPrediction:
    entity: EntityRow
    score: float  # cosine similarity, [-1, 1]
    known: bool  # the triplet is already in the KG


@dataclass(frozen=True)
class RelationPrediction:
    relation: RelationRow
    score: float  # cosine similarity, [-1, 1]
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
        scores = score_batch(self.run, self._batch(kg, head, relations[0], tail))[2][0]  # (R,) cosines
        known = self.store.known_relations(kg, head_id, tail_id)
        top = scores.topk(min(k, len(relations)))
        return [RelationPrediction(relations[i], float(s), relations[i].idx in known)
                for s, i in zip(top.values.tolist(), top.indices.tolist())]

    def embeddings(self, kg: str) -> EntityEmbeddings:
        """Every entity's embedding, once per KG: read from Neo4j when this run wrote them, else encoded."""
        with self._lock:
            if kg not in self._embeddings:
                self._embeddings[kg] = (stored_embeddings(self.store, kg) if self.wrote_embeddings(kg)
                                        else embed_kg(self.run, self.store, kg, progress=False))
            return self._embeddings[kg]

    def wrote_embeddings(self, kg: str) -> bool:
        """Whether the KG's vectors in Neo4j are this run's, at this step, for the KG as it is now."""
        origin = self.store.embedding_origin(kg)
        return (origin is not None and (origin.run, origin.step) == (self.run.name, self.run.step)
                and origin.content_version == self.store.content_version(kg))

    # -- queries for the KG's vector index (Neighbours by free text or image) ---------------------

    def text_query(self, kg: str, text: str) -> np.ndarray:
        """(D,) unit-norm embedding of a free text, in the space of the KG's stored embeddings."""
        with self._lock:
            self._require_same_space(kg)
            return embed_texts(self.run, [text])[0].numpy()

    def image_query(self, kg: str, image: Image.Image) -> np.ndarray:
        """(D,) unit-norm embedding of an RGB image, in the space of the KG's stored embeddings."""
        with self._lock:
            self._require_same_space(kg)
            return embed_images(self.run, [image])[0].numpy()

    def _require_same_space(self, kg: str) -> None:
        # A query embedded by another model (or another step of this one) lands in another space:
        # its "nearest" entities would be noise, so refuse and say how to line them up.
        origin = self.store.embedding_origin(kg)
        if origin is None or origin.run != self.run.name:
            raise KclipError(f"KG {kg!r}'s embeddings were not written by run {self.run.name!r}; "
                             f"embed a query with the run that wrote them")
        if origin.step != self.run.step:
            raise KclipError(f"KG {kg!r} was embedded at step {origin.step:,} of run {origin.run!r}, whose latest "
                             f"checkpoint is now step {self.run.step:,}: a query would land in another space. "
                             f"Embed the KG again: `kclip embed --run {origin.run} --kg {kg}`")

    # -- tables -----------------------------------------------------------------------------------

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

"""Fixtures for model tests: the tiny random-init CLIP's tokenizer and the toy batch (toy_batch.py)."""

from __future__ import annotations

import pytest
import torch
from toy_batch import make_toy_batch

from kclip.models.batch import TripletBatch
from kclip.models.clip_factory import create_clip
from kclip.models.knowledge_clip import KnowledgeCLIP, LossWeights, ModelConfig


@pytest.fixture(scope="session")
def tokenizer():
    return create_clip("kclip-tiny")[3]


@pytest.fixture
def toy_batch(tokenizer) -> TripletBatch:
    return make_toy_batch(tokenizer)


@pytest.fixture
def make_model():
    """Build a tiny KnowledgeCLIP with the given loss weights, seeded so tests are repeatable."""

    def make(seed: int = 0, model: dict | None = None, **weights: float) -> KnowledgeCLIP:
        torch.manual_seed(seed)
        return KnowledgeCLIP(ModelConfig(clip="kclip-tiny", **(model or {})), LossWeights(**weights))

    return make


@pytest.fixture
def ring_kg(graph_store, media_store, kg_name, tmp_path) -> str:
    """The ring-and-hub KG of kg_fixtures.py in Neo4j: 20 train triplets, one dev, two test."""
    from kg_fixtures import HUB, RING, write_tsv_kg

    from kclip.kg_loaders.tsv import TsvLoader
    from kclip.platform.ingest import load_kg

    path = write_tsv_kg(tmp_path / "kg", RING + HUB, dev=[("a0", "has", "a5")], test=[("a2", "next", "a4"), ("a1", "has", "a6")])
    load_kg(graph_store, TsvLoader(path, kg=kg_name), media_store, progress=False)
    return kg_name

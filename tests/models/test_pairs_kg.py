"""``data.pairs_kg``: image-text pairs of another KG beside every batch, for ITC and KD only."""

from __future__ import annotations

import collections

import pytest
import torch
from PIL import Image

from kclip.kg_loaders.image_text import ImageTextLoader
from kclip.models.features import featurizer_for
from kclip.models.knowledge_clip import KnowledgeCLIP, LossWeights, ModelConfig
from kclip.models.sampler import SamplerSpec, TripletStream
from kclip.models.train import train
from kclip.models.train_config import load_train_config
from kclip.platform.errors import ConfigError
from kclip.platform.ingest import load_kg
from kclip.platform.media import MediaStore

PAIRS = 5


@pytest.fixture
def pairs_kg(graph_store, neo4j_settings, kg_name, tmp_path) -> str:
    """An image-text KG of five coloured squares with one caption each, in the media store training reads."""
    folder = tmp_path / "pairs"
    (folder / "images").mkdir(parents=True)
    for i in range(PAIRS):
        Image.new("RGB", (40, 30), (50 * i, 255 - 40 * i, 7 + i)).save(folder / "images" / f"c{i}.png")
    (folder / "pairs.csv").write_text("image,caption\n" + "".join(f"c{i}.png,a square of colour {i}\n" for i in range(PAIRS)))
    name = f"{kg_name}-pairs"
    load_kg(graph_store, ImageTextLoader(folder / "pairs.csv", kg=name), MediaStore(neo4j_settings.media_root),
            progress=False)
    return name


@pytest.fixture
def model() -> KnowledgeCLIP:
    torch.manual_seed(0)
    return KnowledgeCLIP(ModelConfig(clip="kclip-tiny"), LossWeights(e2e=1, e2r=1, g2e=1, kd=0.5, itc=1))


def test_every_batch_has_its_pairs_and_the_kg_triplets_stay_once_per_epoch(
        neo4j_settings, graph_store, ring_kg, pairs_kg, model):
    spec = SamplerSpec(kg=ring_kg, batch_size=6, hops=1, fanout=2, pair_fraction=0.5, pairs_kg=pairs_kg)
    stream = TripletStream(neo4j_settings, spec, featurizer_for(model, neo4j_settings.media_root))
    triplets, captions = collections.Counter(), collections.Counter()
    try:
        for batch in stream.loader(epoch=0, num_workers=0):
            E = batch.entity_idx.numel()
            kg_rows = batch.entity_idx >= 0
            assert batch.heads.numel() <= 3 and bool(kg_rows[batch.heads].all() and kg_rows[batch.tails].all())
            triplets.update(zip(batch.entity_idx[batch.heads].tolist(), batch.entity_idx[batch.tails].tolist()))
            # Three pairs (two where the endless order starts over mid-batch and repeats one): images
            # and their captions, entities after the KG's, in no triplet.
            assert batch.pair_image.numel() in (2, 3) and not kg_rows[batch.pair_image].any()
            assert batch.subgraph.batch_entities == int(kg_rows.sum()) < E
            texts = dict(zip(batch.text_rows.tolist(), range(batch.text_rows.numel())))
            assert all(int(row) in texts for row in batch.pair_text)
            captions.update(batch.pair_text.tolist())
            out = model(batch)  # every term, the G2E subgraph included, on the mixed batch
            assert all(torch.isfinite(v) for v in out.values()) and out["itc"] > 0
    finally:
        stream.close()
    assert len(triplets) == graph_store.stats(ring_kg).triplets["train"]
    assert set(triplets.values()) == {1}


def test_training_with_pairs_kg_and_a_kg_without_pairs_is_refused(neo4j_settings, ring_kg, pairs_kg):
    config = load_train_config("tiny", {"max_steps": 2, "data.num_workers": 0, "data.pair_fraction": 0.25,
                                        "data.pairs_kg": pairs_kg})
    run = train(neo4j_settings, ring_kg, config, run_name=f"{ring_kg}-with-pairs", progress=False)
    assert run
    wrong = config.model_copy(update={"data": config.data.model_copy(update={"pairs_kg": ring_kg})})
    with pytest.raises(ConfigError, match="has no 'image of'"):
        train(neo4j_settings, ring_kg, wrong, run_name=f"{ring_kg}-no-pairs", progress=False)
    missing = config.model_copy(update={"data": config.data.model_copy(update={"pairs_kg": f"{ring_kg}-nowhere"})})
    with pytest.raises(ConfigError, match="no such KG in this database"):
        train(neo4j_settings, ring_kg, missing, run_name=f"{ring_kg}-missing-pairs", progress=False)

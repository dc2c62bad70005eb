"""``kclip compare`` (models/compare.py): a real comparison on the compositional scene set, 2 steps,
2 seeds. Every variant's batches are recorded as the trainer takes them, so "the same batches" is
checked on what trained, not on configs; means and spreads against the registry's evaluations."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from kg_fixtures import kclip_json
from PIL import Image

from kclip.kg_loaders.synth_compositional import generate_compositional
from kclip.kg_loaders.visual_genome import VisualGenomeLoader
from kclip.models import train as train_module
from kclip.models.compare import (DEFAULT_PAIR_FRACTION, Extras, markdown, run_comparison, same_as_full,
                                  skip_reason, write_outputs)
from kclip.models.train_config import load_train_config
from kclip.platform.errors import NotFoundError
from kclip.platform.ingest import load_kg
from kclip.platform.media import MediaStore
from kclip.platform.records import CAPTION_OF, IMAGE_OF
from kclip.platform.registry import Registry

KG, PREFIX = "cmp-comp", "cmp"
SCENES, SCENE_SEED, SEEDS, STEPS = 12, 0, [0, 1], 2  # 2 test images, 14 ARO relation items
TRAINED = ["clip", "knowledge-clip", "no-e2r"]
NOT_TRAINED = ["no-kd", "no-entity-embedding"]  # random init: KD is 0 anyway; the entity table is off
OVERRIDES = {"max_steps": STEPS, "data.num_workers": 0, "data.batch_size": 8, "model.entity_embedding": "off"}


@pytest.fixture(scope="module")
def comp(neo4j_settings, graph_store, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cmp") / "comp"
    generate_compositional(out, images=SCENES, seed=SCENE_SEED, image_size=96)
    load_kg(graph_store, VisualGenomeLoader(out, kg=KG), MediaStore(neo4j_settings.media_root), progress=False)
    return out


@pytest.fixture(scope="module")
def seen(comp, neo4j_settings, graph_store):
    """(the comparison, {run: [(heads, relations, tails) of each batch, as KG idx]}) : the trainer's
    batches recorded on their way into the model."""
    batches: dict[str, list[tuple[tuple[int, ...], ...]]] = defaultdict(list)
    backward = train_module.Trainer._backward

    def recording(trainer, batch, last):
        e, r = batch.entity_idx.tolist(), batch.relation_idx.tolist()
        batches[trainer.run_name].append((tuple(e[i] for i in batch.heads.tolist()),
                                          tuple(r[i] for i in batch.rels.tolist()),
                                          tuple(e[i] for i in batch.tails.tolist())))
        return backward(trainer, batch, last)

    config = load_train_config("tiny", OVERRIDES)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_module.Trainer, "_backward", recording)
        result = run_comparison(neo4j_settings, KG, config, PREFIX, TRAINED + NOT_TRAINED, max_triplets=16,
                                progress=False, seeds=SEEDS, extras=Extras(aro=comp))
    return result, dict(batches)


def by_variant(result):
    return {v.variant: v for v in result.variants}


def test_every_variant_trains_on_the_same_batches(seen, graph_store) -> None:
    result, batches = seen
    pair_rels = {r.idx for r in graph_store.relations(KG) if r.name in (IMAGE_OF, CAPTION_OF)}
    assert any(f"pair_fraction set to {DEFAULT_PAIR_FRACTION}" in note for note in result.notes)
    for seed in SEEDS:
        runs = [f"{PREFIX}-{v}-s{seed}" for v in TRAINED]
        first = batches[runs[0]]
        assert len(first) == STEPS and all(batches[run] == first for run in runs[1:])
        pairs = [sum(r in pair_rels for r in rels) for _, rels, _ in first]
        assert pairs == [round(8 * DEFAULT_PAIR_FRACTION)] * STEPS  # CLIP-continued has pairs every step
        budget = result.budget[seed]
        assert (budget.steps, budget.triplets, budget.pairs) == (STEPS, sum(len(h) for h, _, _ in first), sum(pairs))
    assert batches[f"{PREFIX}-clip-s0"] != batches[f"{PREFIX}-clip-s1"]  # a seed changes the data


def test_metrics_a_variant_cannot_have_are_na(seen) -> None:
    result, _ = seen
    v = by_variant(result)
    for run_metrics in v["clip"].per_run:  # no E2E, no E2R: no link, relation or fusion figures
        assert all(run_metrics[m] is None for m in ("mrr", "hits@10", "tail_mrr", "relation_mrr",
                                                     "aro/fusion_relation_accuracy"))
        assert all(isinstance(run_metrics[m], float) for m in ("i2t_r@1", "aro/pooled_relation_accuracy"))
    assert v["no-e2r"].mean["relation_mrr"] is None and isinstance(v["no-e2r"].mean["mrr"], float)
    assert all(value is not None for value in v["knowledge-clip"].mean.values())
    row = next(line for line in markdown(result).splitlines() if line.startswith("| clip |"))
    assert row.count("n/a") == sum(v["clip"].mean[m] is None for m in result.table_metrics()) >= 3
    assert result.chance["aro/pooled_relation_accuracy"] == 0.5


def test_means_and_spreads_come_from_each_run(seen, neo4j_settings) -> None:
    result, _ = seen
    registry = Registry(neo4j_settings.registry)
    for v in (by_variant(result)[name] for name in TRAINED):
        assert v.runs == [f"{PREFIX}-{v.variant}-s{s}" for s in SEEDS] and v.seeds == SEEDS
        link = registry.evaluations(v.runs[0])[0].metrics  # kclip eval's record of the KG split
        assert v.per_run[0]["i2t_r@5"] == link["i2t_r@5"]
        for metric, mean in v.mean.items():
            values = [m[metric] for m in v.per_run]
            if mean is None:
                assert None in values and v.std[metric] is None
            else:
                assert mean == pytest.approx(np.mean(values))
                assert v.std[metric] == pytest.approx(np.std(values, ddof=1))


def test_ablations_identical_to_the_full_model_are_not_run(seen, neo4j_settings) -> None:
    result, _ = seen
    registry = Registry(neo4j_settings.registry)
    for name in NOT_TRAINED:
        v = by_variant(result)[name]
        assert v.runs == [] and v.mean == {} and "same as knowledge-clip" in v.note
        with pytest.raises(NotFoundError):
            registry.get_run(f"{PREFIX}-{name}-s0")


def test_an_ablation_is_the_full_model_when_the_config_has_that_part_off_anyway() -> None:
    config = load_train_config("tiny", OVERRIDES)
    assert same_as_full(config, "no-kd") and same_as_full(config, "no-entity-embedding")
    started = config.model_copy(update={"model": config.model.model_copy(update={"pretrained": "w.pt"})})
    continued = config.model_copy(update={"model": config.model.model_copy(update={"init_from": "parent-run"})})
    assert not same_as_full(started, "no-kd") and not same_as_full(continued, "no-kd")  # KD is on from a start
    table = config.model_copy(update={"model": config.model.model_copy(update={"entity_embedding": "auto"})})
    assert not same_as_full(table, "no-entity-embedding")
    no_hops = config.model_copy(update={"data": config.data.model_copy(update={"hops": 0})})
    assert same_as_full(no_hops, "no-g2e") and not same_as_full(config, "no-g2e")
    assert "no 'image of' pairs" in skip_reason(config, "clip", has_pairs=False)
    assert skip_reason(started, "clip", has_pairs=False) == ""  # KD alone still continues CLIP


def test_outputs_are_written_and_recorded(seen, neo4j_settings, tmp_path) -> None:
    result, _ = seen
    paths = write_outputs(result, tmp_path / "out")
    text = paths["md"].read_text()
    assert "| variant | seeds |" in text and "± " in text and "same as knowledge-clip" in text
    written = json.loads(paths["json"].read_text())
    assert [v["variant"] for v in written["variants"]] == TRAINED + NOT_TRAINED
    assert written["variants"][0]["mean"]["mrr"] is None  # clip's link MRR: null, not a number
    with Image.open(paths["png"]) as png:
        png.load()
        colours = {c for _, c in png.convert("RGB").getcolors(maxcolors=1 << 16)}
    assert png.size[0] > 400 and (0x4E, 0x79, 0xA7) in colours  # the first metric's bars are drawn

    stored = Registry(neo4j_settings.registry).comparisons(KG)[0]
    assert (stored.name, stored.kg, stored.split, stored.config["data"]["pair_fraction"]) == \
        (PREFIX, KG, "test", DEFAULT_PAIR_FRACTION)
    for row, v in zip(stored.results, result.variants):
        assert (row["variant"], row["runs"], row["seeds"], row["note"]) == (v.variant, v.runs, v.seeds, v.note)
        assert row["metrics"] == v.mean and row["spread"] == v.std
        assert row["per_run"] == dict(zip(v.runs, v.per_run))


def test_the_command_writes_its_files(comp, neo4j_settings, tmp_path) -> None:
    out = tmp_path / "cli"
    found = kclip_json(neo4j_settings, "compare", "--kg", KG, "--variants", "clip,no-kd", "--seeds", "7",
                       "--max-steps", "1", "--max-triplets", "4", "--prefix", "cmp-cli", "--out", str(out), "--set", "data.num_workers=0",
                       "--set", "data.batch_size=8")
    clip, no_kd = found["variants"]
    assert clip["runs"] == ["cmp-cli-clip-s7"] and clip["mean"]["mrr"] is None
    assert all(value is None for value in clip["std"].values())  # one seed: no spread
    assert no_kd["runs"] == [] and "same as" in no_kd["note"]
    assert json.loads((out / "compare.json").read_text()) == found
    assert (out / "compare.md").is_file() and Image.open(out / "compare.png").size[0] > 0

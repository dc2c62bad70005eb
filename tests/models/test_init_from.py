"""`kclip train --init-from RUN|WEIGHTS`: any run or weights file is a start, the KD teacher is that
start frozen, and the lineage is recorded in the registry and shown by `kclip runs`."""

from __future__ import annotations

import pytest
import torch
from kg_fixtures import kclip_json

from kclip.models.clip_factory import create_clip
from kclip.models.inference import load_run
from kclip.models.train import train
from kclip.models.train_config import load_train_config
from kclip.platform.errors import ConfigError
from kclip.platform.registry import Registry

FAST = {"data.num_workers": 0, "data.batch_size": 8, "log_every": 1, "max_steps": 2}


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_continue_from_a_run(neo4j_settings, ring_kg) -> None:
    parent = train(neo4j_settings, ring_kg, load_train_config("tiny", {**FAST, "model.fusion_layers": 1}),
                   progress=False)
    # The child's config asks for 2 fusion layers: the parent's architecture wins (its weights must fit).
    child = train(neo4j_settings, ring_kg, load_train_config("tiny", {**FAST, "model.init_from": parent}),
                  progress=False)
    start, grown = load_run(neo4j_settings, parent), load_run(neo4j_settings, child)
    assert grown.config.model.fusion_layers == 1 and grown.config.model.init_step == 2
    assert grown.model.teacher is not None, "a trained start turns KD on"
    assert same_weights(grown.model.teacher, start.model.clip), "the teacher is the start, frozen"
    assert not same_weights(grown.model.clip, start.model.clip), "the student trained on"

    assert Registry(neo4j_settings.registry).get_run(child).parent == parent
    listed = {r["run"]: r for r in kclip_json(neo4j_settings, "runs", "list", "--kg", ring_kg)}
    assert listed[child]["from"] == parent and listed[parent]["from"] is None
    grandchild = train(neo4j_settings, ring_kg, load_train_config("tiny", {**FAST, "model.init_from": child}),
                       progress=False)
    shown = kclip_json(neo4j_settings, "runs", "show", grandchild)
    assert shown["lineage"] == [child, parent]


def test_continue_from_a_weights_file(neo4j_settings, ring_kg, tmp_path) -> None:
    torch.manual_seed(3)
    clip, *_ = create_clip("kclip-tiny")
    weights = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(clip.state_dict(), weights)
    run = train(neo4j_settings, ring_kg, load_train_config("tiny", {**FAST, "model.init_from": str(weights)}),
                progress=False)
    loaded = load_run(neo4j_settings, run)
    assert loaded.config.model.pretrained == str(weights.resolve())
    assert same_weights(loaded.model.teacher, clip)
    assert Registry(neo4j_settings.registry).get_run(run).parent == str(weights)


def test_unknown_start_is_refused(neo4j_settings, ring_kg) -> None:
    with pytest.raises(ConfigError, match="neither a run with a checkpoint .* nor a weights file"):
        train(neo4j_settings, ring_kg, load_train_config("tiny", {**FAST, "model.init_from": "no-such-run"}),
              progress=False)

"""A run started from a weights file needs that file only to start: its checkpoint carries every
weight (the frozen KD teacher's too), so eval, embed, predict and --resume work once it is gone."""

from __future__ import annotations

from pathlib import Path

import torch

from kclip.models.clip_factory import create_clip
from kclip.models.embed import write_embeddings
from kclip.models.evaluate import evaluate_and_record
from kclip.models.inference import load_run
from kclip.models.knowledge_clip import ModelConfig
from kclip.models.predict import Predictor
from kclip.models.train import train
from kclip.models.train_config import load_train_config

FAST = {"data.num_workers": 0, "data.batch_size": 8, "log_every": 1}


def weights_file(path: Path) -> Path:
    torch.manual_seed(7)
    clip, *_ = create_clip("kclip-tiny")
    torch.save(clip.state_dict(), path)
    return path


def test_run_outlives_its_weights_file(neo4j_settings, graph_store, ring_kg, tmp_path) -> None:
    weights = weights_file(tmp_path / "open_clip_pytorch_model.bin")
    config = load_train_config("tiny", {**FAST, "max_steps": 2, "model.pretrained": str(weights)})
    run = train(neo4j_settings, ring_kg, config, progress=False)
    loaded = load_run(neo4j_settings, run)
    assert loaded.model.teacher is not None, "continued from weights: KD distils from them"
    teacher = {k: v.clone() for k, v in loaded.model.teacher.state_dict().items()}

    weights.unlink()
    assert not weights.exists()
    again = load_run(neo4j_settings, run)
    assert all(torch.equal(teacher[k], v) for k, v in again.model.teacher.state_dict().items())
    assert evaluate_and_record(neo4j_settings, run, ring_kg, "test")["triplets"] > 0
    assert write_embeddings(again, graph_store, ring_kg, progress=False).entities > 0
    assert Predictor(again, graph_store).tails(ring_kg, "a0", "next", k=3)
    resumed = train(neo4j_settings, resume=run, max_steps=4, progress=False)
    assert load_run(neo4j_settings, resumed).step == 4


def test_blank_pretrained_means_random_init_without_a_teacher() -> None:
    assert ModelConfig(pretrained="").pretrained is None
    assert ModelConfig(pretrained="  ").pretrained is None

"""The trainer end to end on a real Neo4j, CPU, tiny config: loss falls, kill -9 + resume is exact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from kclip.models.train import latest_checkpoint, load_checkpoint, lr_factor, train
from kclip.models.train_config import load_train_config
from kclip.platform.errors import ConfigError
from kclip.platform.registry import Registry

FAST = {"data.num_workers": 0, "data.batch_size": 8, "log_every": 1}


def tiny(**overrides):
    return load_train_config("tiny", {**FAST, **overrides})


def test_bundled_configs_validate_and_errors_name_the_field(tmp_path):
    for name in ("tiny", "small", "vit-b-32-openai", "vit-b-16-openai", "vit-b-32-laion", "vit-b-16-laion"):
        assert load_train_config(name).max_steps > 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  batch_size: -3\n")
    with pytest.raises(ConfigError, match="data.batch_size"):
        load_train_config(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken.yaml:\d+"):
        load_train_config(broken)
    with pytest.raises(ConfigError, match="no config 'nope'"):
        load_train_config("nope")


def test_lr_schedule_warms_up_then_decays_to_zero():
    assert lr_factor(0, 10, 100) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100) == pytest.approx(1.0)
    assert lr_factor(55, 10, 100) == pytest.approx(0.5)
    assert lr_factor(100, 10, 100) == pytest.approx(0.0)


def test_short_run_lowers_the_loss_and_is_recorded(neo4j_settings, ring_kg):
    run = train(neo4j_settings, ring_kg, tiny(max_steps=40, checkpoint_every=20, **{"optim.warmup_steps": 5}),
                progress=False)
    registry = Registry(neo4j_settings.registry)
    losses = [v for _, _, v in registry.metrics(run, "train/loss")]
    assert len(losses) == 40
    assert sum(losses[-8:]) / 8 < 0.8 * sum(losses[:8]) / 8
    record = registry.get_run(run)
    assert record.status == "finished" and record.step == 40 and record.kg == ring_kg
    assert record.config["max_steps"] == 40
    assert [c.step for c in record.checkpoints] == [20, 40]
    assert latest_checkpoint(neo4j_settings.runs_root / run).name == "step-00000040.pt"


def _train_cmd(settings, *args):
    env = {**os.environ, "KCLIP_HOME": str(settings.home), "KCLIP_NEO4J_URI": settings.bolt_uri,
           "KCLIP_NEO4J_PASSWORD": _password(settings), "KCLIP_CACHE_DIR": str(settings.cache_dir)}
    return [sys.executable, "-m", "kclip", "train", *args], env


def _password(settings):
    from kclip.platform.neo4j_client import _password as password

    return password(settings)


def test_kill_9_then_resume_equals_an_uninterrupted_run(neo4j_settings, ring_kg, tmp_path):
    sets = ["--set", "data.num_workers=0", "--set", "data.batch_size=4", "--set", "checkpoint_every=3",
            "--set", "log_every=1"]
    steps = ["--max-steps", "12"]
    # The uninterrupted reference.
    cmd, env = _train_cmd(neo4j_settings, "--kg", ring_kg, "--config", "tiny", "--run", f"{ring_kg}-ref", *steps, *sets)
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    # The same run, killed -9 once it has written a checkpoint past step 3, then resumed.
    name = f"{ring_kg}-killed"
    cmd, env = _train_cmd(neo4j_settings, "--kg", ring_kg, "--config", "tiny", "--run", name, *steps, *sets)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    directory = neo4j_settings.runs_root / name
    deadline = time.monotonic() + 120
    while not list(directory.glob("step-00000006.pt")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(latest_checkpoint(directory))["position"]["step"]
    assert 3 <= killed_at < 12, "the kill must land mid-run"
    cmd, env = _train_cmd(neo4j_settings, "--resume", name)
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    assert out.stdout.strip().splitlines()[-1] == name  # the run's name is the last line printed
    reference = load_checkpoint(latest_checkpoint(neo4j_settings.runs_root / f"{ring_kg}-ref"))
    resumed = load_checkpoint(latest_checkpoint(directory))
    assert resumed["position"] == reference["position"]
    for key, value in reference["model"].items():
        assert torch.allclose(value.float(), resumed["model"][key].float(), atol=1e-6), key
    losses = Registry(neo4j_settings.registry).metrics(name, "train/loss")
    ref_losses = Registry(neo4j_settings.registry).metrics(f"{ring_kg}-ref", "train/loss")
    assert [s for s, _, _ in losses] == list(range(1, 13))  # steps redone after the kill are logged once
    assert [v for _, _, v in losses] == pytest.approx([v for _, _, v in ref_losses])

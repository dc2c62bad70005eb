"""DDP through torchrun on the CPU (gloo): two ranks share one epoch and one run."""

from __future__ import annotations

import os
import subprocess
import sys

from kclip.models.train import latest_checkpoint, load_checkpoint
from kclip.platform.neo4j_client import _password
from kclip.platform.registry import Registry


def test_two_ranks_train_one_run_under_torchrun(neo4j_settings, ring_kg):
    env = {**os.environ, "KCLIP_HOME": str(neo4j_settings.home), "KCLIP_NEO4J_URI": neo4j_settings.bolt_uri,
           "KCLIP_NEO4J_PASSWORD": _password(neo4j_settings), "KCLIP_CACHE_DIR": str(neo4j_settings.cache_dir),
           "OMP_NUM_THREADS": "1"}
    name = f"{ring_kg}-ddp"
    # "--": without it torchrun reads our --run as an abbreviation of its own --run-path.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "kclip", "--",
           "train", "--kg", ring_kg, "--config", "tiny", "--run", name, "--device", "cpu", "--max-steps", "4",
           "--set", "data.num_workers=0", "--set", "data.batch_size=4", "--set", "log_every=1"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    run = Registry(neo4j_settings.registry).get_run(name)
    assert run.world_size == 2 and run.status == "finished" and run.step == 4
    assert load_checkpoint(latest_checkpoint(neo4j_settings.runs_root / name))["position"]["step"] == 4
    samples = [v for _, _, v in Registry(neo4j_settings.registry).metrics(name, "samples_per_s")]
    assert samples and all(v > 0 for v in samples)

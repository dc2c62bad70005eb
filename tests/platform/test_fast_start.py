"""Commands that neither train nor predict start without torch, open_clip or DGL (20-30 s of imports).

Each command runs in a real subprocess under ``python -X importtime``, whose report lists every
module imported; none of the heavy ones may appear.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from kclip import cli

HEAVY = re.compile(r"\|\s+(torch|open_clip|dgl)(\.|$)", re.MULTILINE)
TRAINING_COMMANDS = {"train", "eval", "compare", "embed", "predict", "demo"}  # these may import torch


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KCLIP_")}
    return {**env, "KCLIP_HOME": str(home), **extra}


def _kclip(args: list[str], env: dict[str, str], importtime: bool = True) -> subprocess.CompletedProcess:
    flags = ["-X", "importtime"] if importtime else []
    return subprocess.run([sys.executable, *flags, "-m", "kclip", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def _heavy_imports(stderr: str) -> list[str]:
    return sorted({m.group(1) for m in HEAVY.finditer(stderr)})


def _light_commands() -> list[list[str]]:
    """Every command and sub-command of the CLI but the training ones: new commands are covered as they come."""
    commands = [[c.name or c.callback.__name__] for c in cli.app.registered_commands]
    for group in cli.app.registered_groups:
        commands.append([group.name])
        commands += [[group.name, c.name or c.callback.__name__] for c in group.typer_instance.registered_commands]
    return [c for c in commands if c[0] not in TRAINING_COMMANDS]


def test_help_of_every_light_command_imports_no_torch(tmp_path):
    # One process runs every --help (a process per command would cost a minute on 2 cores).
    script = (
        "import sys\n"
        "from kclip import cli\n"
        f"for args in {_light_commands()!r}:\n"
        "    try:\n"
        "        cli.app(args + ['--help'], prog_name='kclip')\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code in (0, None), (args, exc.code)\n"
    )
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", script], env=_env(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "load" in done.stdout and "--wait" in done.stdout
    assert _heavy_imports(done.stderr) == []


def test_load_of_a_missing_path_fails_in_a_second_with_one_line(tmp_path):
    args = ["load", "tsv", "/nonexistent", "--kg", "x"]
    traced = _kclip(args, _env(tmp_path))
    assert _heavy_imports(traced.stderr) == []
    started = time.perf_counter()
    done = _kclip(args, _env(tmp_path), importtime=False)
    seconds = time.perf_counter() - started
    print(f"kclip load of a missing path: {seconds:.2f} s")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: /nonexistent: not found"), done.stderr
    assert seconds < 5, f"took {seconds:.1f} s: something heavy is imported again"


def test_commands_that_run_without_neo4j_import_no_torch(tmp_path):
    env = _env(tmp_path, KCLIP_NEO4J_STATE_DIR=str(tmp_path / "neo4j"))
    status = _kclip(["neo4j", "status"], env)
    assert status.returncode == 3 and "not running" in status.stdout
    ui = _kclip(["ui", "--stop"], env)
    assert ui.returncode == 0 and "no explorer was running" in ui.stdout
    synth = _kclip(["synth", "scene-graphs", str(tmp_path / "scenes"), "--images", "2"], env)
    assert synth.returncode == 0, synth.stderr[-2000:]
    for done in (status, ui, synth):
        assert _heavy_imports(done.stderr) == []


def test_load_and_stats_against_neo4j_import_no_torch(cli_env, kg_name, tmp_path):
    data = tmp_path / "kg"
    data.mkdir()
    (data / "train.tsv").write_text("a\tlikes\tb\nb\tlikes\tc\n")
    (data / "entity2text.txt").write_text("a\tA\nb\tB\nc\tC\n")
    load = _kclip(["load", "tsv", str(data), "--kg", kg_name, "--json"], cli_env)
    assert load.returncode == 0, load.stderr[-2000:]
    stats = _kclip(["stats", "--kg", kg_name, "--json"], cli_env)
    assert stats.returncode == 0, stats.stderr[-2000:]
    assert json.loads(stats.stdout)[kg_name]["triplets"]["train"] == 2
    assert _heavy_imports(load.stderr) == [] and _heavy_imports(stats.stderr) == []


def test_light_modules_import_no_torch():
    modules = ["kclip.kg_loaders", "kclip.platform.ingest", "kclip.platform.kg_lock", "kclip.ui.launch"]
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", "; ".join(f"import {m}" for m in modules)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _heavy_imports(done.stderr) == []


def test_search_against_neo4j_imports_no_torch(cli_env, graph_store, kg_name):
    graph_store.ensure_kg(kg_name)
    graph_store.write_entities(kg_name, [{"id": "a", "props": {"modality": "text", "text": "apple pie"}},
                                         {"id": "b", "props": {"modality": "text", "text": "banana split"}}])
    search = _kclip(["search", "app", "--kg", kg_name, "--json"], cli_env)
    assert search.returncode == 0, search.stderr[-2000:]
    assert [hit["id"] for hit in json.loads(search.stdout)] == ["a"]
    assert _heavy_imports(search.stderr) == []


def test_training_code_does_not_import_transformers_for_clip_towers(tmp_path):
    """open_clip would import transformers (~3 s) whenever it is installed; only HF text towers need it."""
    script = ("import sys\n"
              "from kclip.models.train import train\n"
              "from kclip.models.clip_factory import create_clip\n"
              "create_clip('kclip-tiny')\n"
              "assert 'transformers' not in sys.modules, 'transformers imported'\n")
    done = subprocess.run([sys.executable, "-c", script], env=_env(tmp_path), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_heavy_dependencies_are_byte_compiled():
    # Where PYTHONDONTWRITEBYTECODE is set, nothing but ./run setup writes .pyc files: without
    # them every training process compiled torch and open_clip from source (24 s of a 37 s run).
    import importlib.util

    for module in ("torch", "torch._dynamo", "open_clip", "dgl", "streamlit"):
        source = importlib.util.find_spec(module).origin
        assert Path(importlib.util.cache_from_source(source)).is_file(), f"{module} is not byte-compiled ({source})"

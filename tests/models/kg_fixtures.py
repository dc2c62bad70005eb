"""Small KGs on disk for tests that need a real KG in Neo4j, and the real `kclip` command run against
the test session's Neo4j."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from kclip.platform.neo4j_client import _password

# A ring a0 -> a1 -> ... -> a9 -> a0 ("next"), plus hub edges h -> a_i ("has").
RING = [(f"a{i}", "next", f"a{(i + 1) % 10}") for i in range(10)]
HUB = [("h", "has", f"a{i}") for i in range(10)]


def write_tsv_kg(directory: Path, train, dev=(), test=()) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.tsv", train), ("dev.tsv", dev), ("test.tsv", test)):
        if rows:
            (directory / name).write_text("".join(f"{h}\t{r}\t{t}\n" for h, r, t in rows))
    entities = sorted({e for rows in (train, dev, test) for h, _, t in rows for e in (h, t)})
    (directory / "entity2text.txt").write_text("".join(f"{e}\tthe entity {e}\n" for e in entities))
    return directory


def run_kclip(settings, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """The real `kclip ARGS` in a subprocess, against the test session's Neo4j, registry and runs."""
    env = {**os.environ, "KCLIP_HOME": str(settings.home), "KCLIP_NEO4J_URI": settings.bolt_uri,
           "KCLIP_NEO4J_PASSWORD": _password(settings), "KCLIP_REGISTRY_URL": settings.registry,
           "KCLIP_RUNS_DIR": str(settings.runs_root)}
    return subprocess.run([sys.executable, "-m", "kclip", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def kclip_json(settings, *args: str):
    """`kclip ARGS --json`'s parsed output; the command must succeed."""
    done = run_kclip(settings, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)

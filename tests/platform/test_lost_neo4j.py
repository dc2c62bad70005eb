"""A load that loses Neo4j mid-write stops quickly with one line, and the same command finishes it.

A Neo4j of its own (the local service, in a temporary state dir on a free port) is killed with -9
mid-load, then started again: the session's Neo4j stays untouched for the other tests.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from pydantic import SecretStr
from kg_data import triplet_counts, write_dataset
from ports import free_port

from kclip.platform import local_neo4j
from kclip.platform.errors import Neo4jLost
from kclip.platform.graph_store import GraphStore
from kclip.platform.neo4j_client import connect
from kclip.platform.settings import Settings, load_settings

ENTITIES, TRIPLETS = 20_000, 60_000  # a few seconds of writes: long enough to kill Neo4j mid-way



@pytest.fixture
def own_neo4j(neo4j_settings, tmp_path_factory):
    if not neo4j_settings.uses_local_service:
        pytest.skip("killing Neo4j needs the local service (KCLIP_NEO4J_URI or Docker is in use)")
    settings = load_settings(home=tmp_path_factory.mktemp("lost-home"), cache_path=neo4j_settings.cache_dir,
                             neo4j_state_dir=tmp_path_factory.mktemp("lost-neo4j"), neo4j_bolt_port=free_port(),
                             neo4j_heap="512m", neo4j_pagecache="128m",
                             # A password Neo4j's admin tool could take for an option, with quotes and
                             # a backslash: the initial-password step must pass it through as is.
                             neo4j_password=SecretStr('-starts-with-a-dash "quoted" back\\slash'))
    local_neo4j.start(settings)
    yield settings
    local_neo4j.stop(settings)


def _env(settings: Settings) -> dict[str, str]:
    return {**os.environ, "KCLIP_HOME": str(settings.home), "KCLIP_NEO4J_URI": settings.bolt_uri,
            "KCLIP_NEO4J_PASSWORD": local_neo4j.login_password(settings), "KCLIP_CACHE_DIR": str(settings.cache_dir)}


def _kill_when_triplets_land(settings: Settings, kg: str, load: subprocess.Popen) -> float:
    """Kill -9 the server once the load writes triplets; returns when (monotonic)."""
    driver = connect(settings)
    try:
        store = GraphStore(driver, settings.neo4j_database)
        deadline = time.monotonic() + 300
        while load.poll() is None and time.monotonic() < deadline:
            if kg in store.list_kgs() and store.has_triplets(kg):
                break
            time.sleep(0.1)
    finally:
        driver.close()
    assert load.poll() is None, "the load finished before Neo4j could be killed: make the dataset bigger"
    os.kill(local_neo4j.status(settings).pid, signal.SIGKILL)
    return time.monotonic()


@pytest.mark.slow  # starts Neo4j twice: about a minute on an idle 2-core machine
def test_a_load_that_loses_neo4j_says_so_in_one_line_and_a_rerun_finishes_it(own_neo4j, tmp_path):
    data = write_dataset(tmp_path / "kg", entities=ENTITIES, triplets=TRIPLETS)
    cmd = [sys.executable, "-m", "kclip", "load", "tsv", str(data), "--kg", "big", "--json"]
    load = subprocess.Popen(cmd, env=_env(own_neo4j), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = _kill_when_triplets_land(own_neo4j, "big", load)
    _, stderr = load.communicate(timeout=120)
    detected = time.monotonic() - killed
    print(f"lost Neo4j reported {detected:.1f} s after the kill:\n{stderr.strip().splitlines()[-1]}")
    assert load.returncode == Neo4jLost.exit_code == 75, stderr[-3000:]
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: lost Neo4j (") and "run the same command again once Neo4j is back" in last, stderr
    assert re.search(r"confirmed written before that: [\d,]+ new entities and [\d,]+ new triplets in KG 'big'", last)
    assert detected < 30  # about 10 s on an idle machine

    local_neo4j.start(own_neo4j)
    started = time.monotonic()
    rerun = subprocess.run(cmd, env=_env(own_neo4j), capture_output=True, text=True, timeout=600)
    print(f"rerun finished the load in {time.monotonic() - started:.1f} s")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    summary = json.loads(rerun.stdout[rerun.stdout.index("{"):])
    assert summary["triplets"]["added"] + summary["triplets"]["present"] == TRIPLETS
    driver = connect(own_neo4j)
    try:
        store = GraphStore(driver, own_neo4j.neo4j_database)
        assert store.stats("big").total_entities == ENTITIES
        assert triplet_counts(store, "big") == (TRIPLETS, TRIPLETS)
    finally:
        driver.close()


def test_a_command_whose_neo4j_is_not_there_fails_quickly_in_one_line(tmp_path):
    # Nothing listens on a port that was free a moment ago.
    env = {**os.environ, "KCLIP_HOME": str(tmp_path), "KCLIP_NEO4J_URI": f"bolt://127.0.0.1:{free_port()}",
           "KCLIP_NEO4J_PASSWORD": "x"}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "kclip", "stats"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "is not answering" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert time.monotonic() - started < 30


# -- training: errors in the sampler's DataLoader workers reach the CLI as one line -------------

def _stream(settings: Settings, kg: str, tmp_path, reconnect_timeout: float = 300.0):
    import open_clip

    from kclip.models.features import Featurizer
    from kclip.models.sampler import SamplerSpec, TripletStream

    featurizer = Featurizer(open_clip.get_tokenizer("ViT-B-32"), open_clip.image_transform(32, is_train=False),
                            tmp_path / "media")
    spec = SamplerSpec(kg=kg, batch_size=4, hops=0, reconnect_timeout=reconnect_timeout)
    return TripletStream(settings, spec, featurizer)


@pytest.fixture
def small_kg(graph_store, media_store, kg_name, tmp_path) -> str:
    from kclip.kg_loaders.tsv import TsvLoader
    from kclip.platform.ingest import load_kg

    load_kg(graph_store, TsvLoader(write_dataset(tmp_path / "kg", entities=10, triplets=20), kg=kg_name), media_store,
            progress=False)
    return kg_name


def test_a_worker_that_cannot_reach_neo4j_stops_training_with_one_line(neo4j_settings, small_kg, tmp_path):
    stream = _stream(neo4j_settings, small_kg, tmp_path, reconnect_timeout=1)
    loader = stream.loader(epoch=0, num_workers=1)  # the epoch's triplets are read here, from the live Neo4j
    # The worker, forked at the first batch, gets settings whose Neo4j is gone.
    stream.settings = neo4j_settings.model_copy(update={"neo4j_uri": f"bolt://127.0.0.1:{free_port()}",
                                                        "neo4j_password": SecretStr("x")})
    try:
        with pytest.raises(Neo4jLost) as lost:
            next(iter(loader))
    finally:
        stream.close()
    message = str(lost.value)
    assert lost.value.exit_code == 75 and "\n" not in message and "Traceback" not in message
    assert message.startswith("reading entities: Neo4j did not answer for 1 s")
    assert message.endswith("`kclip train --resume RUN` continues from the last checkpoint")


def test_a_worker_error_reaches_the_main_process_as_itself(graph_store, neo4j_settings, small_kg, tmp_path):
    from kclip.platform.errors import KclipError

    stream = _stream(neo4j_settings, small_kg, tmp_path)
    loader = stream.loader(epoch=0, num_workers=1)
    graph_store.drop_kg(small_kg)  # the epoch's entities vanish before a worker fetches them
    try:
        with pytest.raises(KclipError, match=f"^entities .* of KG '{small_kg}' vanished from Neo4j mid-epoch$"):
            next(iter(loader))
    finally:
        stream.close()

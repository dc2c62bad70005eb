"""Fixtures for the explorer's tests: small synthetic KGs in the session's real Neo4j, and the
``KCLIP_*`` environment that points the app (in-process AppTest or a subprocess) at them."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import streamlit as st
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from ports import free_port
from ui_browser import WAIT, require_browser, screenshot

from kclip.kg_loaders.synth_scene_graphs import SynthSummary, generate_scene_graphs
from kclip.kg_loaders.visual_genome import VisualGenomeLoader
from kclip.platform.graph_store import GraphStore
from kclip.platform.ingest import load_kg
from kclip.platform.media import MediaStore
from kclip.platform.neo4j_client import _password
from kclip.platform.settings import Settings, get_settings
from kclip.ui.launch import answering, run_ui

UI_KG = "ui-shapes"  # 12 images, never embedded: the KG the page tests explore
EMBEDDED_KG = "ui-embedded"  # 3 images with random embeddings and a vector index; never trained on
COLLAPSED_KG = "ui-collapsed"  # 3 images, every entity with the same embedding


def _load_synthetic(store: GraphStore, settings: Settings, out: Path, kg: str, images: int) -> SynthSummary:
    summary = generate_scene_graphs(out, images=images, seed=0)
    # The app's media store (KCLIP_HOME/media) must hold the images the UI shows.
    load_kg(store, VisualGenomeLoader(out, kg=kg), MediaStore(settings.media_root), progress=False)
    return summary


@pytest.fixture(scope="session")
def ui_kg(graph_store: GraphStore, neo4j_settings: Settings, tmp_path_factory) -> tuple[str, SynthSummary]:
    return UI_KG, _load_synthetic(graph_store, neo4j_settings, tmp_path_factory.mktemp("ui-synth"), UI_KG, 12)


@pytest.fixture(scope="session")
def embedded_kg(graph_store: GraphStore, neo4j_settings: Settings, tmp_path_factory) -> str:
    """A KG whose entities have (random, deterministic) embeddings and a vector index."""
    _load_synthetic(graph_store, neo4j_settings, tmp_path_factory.mktemp("ui-embedded"), EMBEDDED_KG, 3)
    lo, hi, n = graph_store.entity_idx_range(EMBEDDED_KG)
    rows = graph_store.entities_page(EMBEDDED_KG, lo, hi + 1)
    vectors = np.random.default_rng(0).normal(size=(len(rows), 8)).astype(np.float32)
    graph_store.write_embeddings(EMBEDDED_KG, [r.idx for r in rows], vectors)
    graph_store.ensure_vector_index(EMBEDDED_KG, 8)
    return EMBEDDED_KG


@pytest.fixture(scope="session")
def ui_env_vars(neo4j_settings: Settings) -> dict[str, str]:
    """The environment under which the app sees the test Neo4j, media store and run registry."""
    s = neo4j_settings
    return {
        "KCLIP_HOME": str(s.home),
        "KCLIP_NEO4J_URI": s.bolt_uri,
        "KCLIP_NEO4J_USER": s.neo4j_user,
        "KCLIP_NEO4J_PASSWORD": _password(s),
        "KCLIP_NEO4J_DATABASE": s.neo4j_database,
        "KCLIP_MEDIA_DIR": str(s.media_root),
        "KCLIP_REGISTRY_URL": s.registry,
        "KCLIP_RUNS_DIR": str(s.runs_root),
    }


@pytest.fixture
def ui_env(monkeypatch: pytest.MonkeyPatch, ui_env_vars: dict[str, str]) -> Iterator[dict[str, str]]:
    """Point an in-process app at the test Neo4j; fresh data caches so each test reads what it set up."""
    for name, value in ui_env_vars.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    st.cache_data.clear()
    yield ui_env_vars
    get_settings.cache_clear()


@pytest.fixture
def app_url(ui_env_vars: dict[str, str]) -> Iterator[str]:
    """The real app, as `kclip ui` starts it, on a free local port; stopped afterwards."""
    port = free_port()
    proc = run_ui("127.0.0.1", port, headless=True, env=ui_env_vars)
    with answering(proc, f"http://127.0.0.1:{port}", timeout=WAIT) as url:
        yield url


@pytest.fixture
def browser(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[WebDriver]:
    """Headless Chromium; the page as the test left it is saved as ``screenshots/<test>.png``."""
    binary, driver_path = require_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
        screenshot(driver, request.node.name)
    finally:
        driver.quit()


@pytest.fixture(scope="session")
def trained_run(ui_kg, neo4j_settings) -> str:
    """A real run on the UI KG: the tiny random-init config for 3 steps (seconds on a CPU)."""
    from kclip.models.train import train
    from kclip.models.train_config import load_train_config

    config = load_train_config("tiny", {"max_steps": 3, "data.num_workers": 0, "data.batch_size": 8})
    return train(neo4j_settings, kg=ui_kg[0], config=config, device="cpu", progress=False)


@pytest.fixture(scope="module")
def run_embedded_kg(ui_kg, trained_run, graph_store: GraphStore, neo4j_settings: Settings) -> Iterator[str]:
    """ui-shapes embedded by ``trained_run`` through `kclip embed`'s own function, for one test module.

    Afterwards ui-shapes is again never embedded (no vectors, index or recorded run), as other
    modules' tests (the Neighbours hint without an index) expect.
    """
    from kclip.models.embed import write_embeddings
    from kclip.models.inference import load_run
    from kclip.platform import cypher

    kg = ui_kg[0]
    write_embeddings(load_run(neo4j_settings, trained_run), graph_store, kg, progress=False)
    yield kg
    graph_store.clear_embedding_origin(kg)
    graph_store.run(cypher.with_names(cypher.DROP_INDEX, index=cypher.embedding_index(kg)))
    graph_store.run(cypher.with_names("MATCH (e:<label>) REMOVE e.embedding, e:<label>",
                                      label=cypher.embedding_label(kg)))


RUNS_KG = "ui-runs"  # the UI KG's scenes again, for the Runs page's own runs: ui-shapes keeps trained_run alone
# Where second_run's config differs from trained_run's: these four keys, nothing else.
SECOND_RUN_OVERRIDES = {"max_steps": 4, "log_every": 1, "optim.lr": 5e-4, "data.batch_size": 4}


@pytest.fixture(scope="session")
def runs_kg(graph_store: GraphStore, neo4j_settings: Settings, tmp_path_factory) -> str:
    _load_synthetic(graph_store, neo4j_settings, tmp_path_factory.mktemp("ui-runs"), RUNS_KG, 12)
    return RUNS_KG


@pytest.fixture(scope="session")
def second_run(runs_kg, trained_run, neo4j_settings) -> str:
    """Another real tiny run, on ``runs_kg``, for the Runs page: 4 steps, metrics logged at each."""
    from kclip.models.train import train
    from kclip.models.train_config import load_train_config

    config = load_train_config("tiny", {"data.num_workers": 0, **SECOND_RUN_OVERRIDES})
    return train(neo4j_settings, kg=runs_kg, config=config, run_name="ui-second-run", device="cpu", progress=False)


@pytest.fixture(scope="session")
def collapsed_kg(graph_store: GraphStore, neo4j_settings: Settings, tmp_path_factory) -> str:
    """A KG of 3 images whose entities all have one and the same embedding (a collapsed space)."""
    _load_synthetic(graph_store, neo4j_settings, tmp_path_factory.mktemp("ui-collapsed"), COLLAPSED_KG, 3)
    lo, hi, _ = graph_store.entity_idx_range(COLLAPSED_KG)
    idxs = [r.idx for r in graph_store.entities_page(COLLAPSED_KG, lo, hi + 1)]
    graph_store.write_embeddings(COLLAPSED_KG, idxs, np.ones((len(idxs), 8), dtype=np.float32))
    graph_store.ensure_vector_index(COLLAPSED_KG, 8)
    return COLLAPSED_KG

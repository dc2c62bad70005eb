"""Shared fixtures: a real Neo4j for the whole session, never a mock.

Where it comes from, in order: ``KCLIP_NEO4J_URI`` if set (with ``KCLIP_NEO4J_PASSWORD``); a
testcontainers ``neo4j:5.26-community`` when a Docker engine answers; otherwise kclip's own local
service (``kclip.platform.local_neo4j``) in a throwaway state dir on a free port.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ports import free_port
from kclip.platform.graph_store import GraphStore
from kclip.platform.media import MediaStore
from kclip.platform.neo4j_client import connect
from kclip.platform.settings import Settings, load_settings

WN18RR = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "wn18rr"
DOCKER_IMAGE = "neo4j:5.26-community"



def docker_engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def kclip_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("kclip-home")


@pytest.fixture(scope="session")
def neo4j_settings(kclip_home, tmp_path_factory):
    """Settings for a real Neo4j that lives as long as the test session."""
    if os.environ.get("KCLIP_NEO4J_URI"):
        yield load_settings(home=kclip_home)
        return
    if docker_engine_answers():
        from testcontainers.neo4j import Neo4jContainer

        with Neo4jContainer(DOCKER_IMAGE, password="kclip-test-password") as container:
            yield load_settings(home=kclip_home, neo4j_uri=container.get_connection_url(),
                                neo4j_password="kclip-test-password")
        return
    from kclip.platform import local_neo4j

    # The downloaded jars are shared with the user's cache: tests must not fetch them again.
    settings = load_settings(home=kclip_home, cache_path=load_settings().cache_dir,
                             neo4j_state_dir=tmp_path_factory.mktemp("neo4j-state"),
                             neo4j_bolt_port=free_port(),
                             neo4j_heap="1g", neo4j_pagecache="512m")  # small: CI shares 2 cores / 24 GB
    local_neo4j.start(settings)
    try:
        yield settings
    finally:
        local_neo4j.stop(settings)


@pytest.fixture(scope="session")
def graph_store(neo4j_settings: Settings):
    driver = connect(neo4j_settings)
    store = GraphStore(driver, neo4j_settings.neo4j_database)
    store.ensure_schema()
    yield store
    driver.close()


_kg_counter = itertools.count()


@pytest.fixture
def kg_name(request) -> str:
    """A fresh KG name per test, so tests never see each other's data."""
    base = "".join(c if c.isalnum() else "-" for c in request.node.name)[:40].strip("-")
    return f"t{next(_kg_counter)}-{base}"


@pytest.fixture
def media_store(tmp_path) -> MediaStore:
    return MediaStore(tmp_path / "media")


@pytest.fixture(scope="session")
def wn18rr_dir() -> Path:
    if not (WN18RR / "train.tsv").is_file():
        pytest.skip(f"WN18RR not found at {WN18RR}")
    return WN18RR

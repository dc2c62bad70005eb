"""Fixtures of the platform tests that run kclip in real subprocesses."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def cli_env(neo4j_settings) -> dict[str, str]:
    """The environment that points a `kclip` subprocess at the test session's Neo4j."""
    from kclip.platform.neo4j_client import _password

    return {**os.environ, "KCLIP_HOME": str(neo4j_settings.home), "KCLIP_NEO4J_URI": neo4j_settings.bolt_uri,
            "KCLIP_NEO4J_PASSWORD": _password(neo4j_settings), "KCLIP_CACHE_DIR": str(neo4j_settings.cache_dir)}

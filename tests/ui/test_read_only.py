"""The explorer cannot write: its store runs every query in a read-access transaction, and Neo4j
refuses a write whatever the Cypher (a probe through the UI's own store once created a node)."""

from __future__ import annotations

import pytest

from kclip.platform.errors import GraphStoreError
from kclip.ui import services

PROBES = [
    "CREATE (p:UiWriteProbe {n: 1}) RETURN p",
    "MERGE (p:UiWriteProbe {n: 2}) RETURN p",
    "MATCH (e:Entity) WITH e LIMIT 1 SET e.ui_probe = true RETURN e",
    "CREATE INDEX ui_probe IF NOT EXISTS FOR (p:UiWriteProbe) ON (p.n)",
]


@pytest.mark.parametrize("cypher", PROBES)
def test_neo4j_refuses_writes_through_the_ui_store(cypher: str, ui_env, ui_kg, graph_store) -> None:
    store = services.store()
    assert store.read_only
    with pytest.raises(GraphStoreError, match="(?i)read|access mode"):
        store.run(cypher)
    assert graph_store.run("MATCH (p:UiWriteProbe) RETURN count(p) AS n")[0]["n"] == 0
    assert graph_store.run("MATCH (e:Entity) WHERE e.ui_probe IS NOT NULL RETURN count(e) AS n")[0]["n"] == 0
    assert not graph_store.run("SHOW INDEXES YIELD name WHERE name = 'ui_probe' RETURN name")


def test_write_helpers_refuse_before_sending(ui_env, ui_kg) -> None:
    store = services.store()
    with pytest.raises(GraphStoreError, match="read-only"):
        store.ensure_kg("ui-write-probe")
    assert "ui-write-probe" not in store.list_kgs()


def test_reads_still_work(ui_env, ui_kg) -> None:
    kg = ui_kg[0]
    assert kg in services.list_kgs()
    assert services.kg_stats(kg).total_triplets > 0

"""The entity page's hub handling and graph canvas, in-process (AppTest) against the session's real Neo4j.

A hub KG built here ("ui-hub": one entity in 380 triplets) checks true group sizes and paging
against independent Cypher; the canvas is driven through the page itself: the component's value
(what the browser sends on a double-click or the expand button) is set in the app's session state,
as the browser would, and the page reruns. The browser does the same for real in
``test_browser_canvas.py``.
"""

from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest
from test_pages import open_page, texts

from kclip.kg_loaders import get_loader
from kclip.platform.graph_store import GraphStore
from kclip.platform.ingest import load_kg
from kclip.platform.media import MediaStore
from kclip.platform.settings import Settings
from kclip.ui import canvas

HUB_KG = "ui-hub"
LINKS, LIKES, POINTS, LEAVES = 330, 5, 40, 10  # hub -links_to-> n0..; hub -likes-> n0..; m0.. -points_at-> hub


@pytest.fixture(scope="module")
def hub_kg(graph_store: GraphStore, neo4j_settings: Settings, tmp_path_factory) -> str:
    """One hub in LINKS + LIKES + POINTS = 375 triplets; spokes n0..n9 each also have a leaf of their own."""
    rows = [("hub", "links_to", f"n{i}") for i in range(LINKS)]
    rows += [("hub", "likes", f"n{i}") for i in range(LIKES)]
    rows += [(f"m{i}", "points_at", "hub") for i in range(POINTS)]
    rows += [(f"n{i}", "has_leaf", f"leaf{i}") for i in range(LEAVES)]
    folder = tmp_path_factory.mktemp("ui-hub")
    (folder / "train.tsv").write_text("".join("\t".join(r) + "\n" for r in rows))
    load_kg(graph_store, get_loader("tsv")(folder, kg=HUB_KG), MediaStore(neo4j_settings.media_root), progress=False)
    return HUB_KG


def cypher_neighbours(graph_store: GraphStore, kg: str, entity_id: str) -> dict[tuple[bool, str], list[str]]:
    """{(outgoing, relation): neighbour ids}, read with plain Cypher, independently of the app's queries."""
    rows = graph_store.run("""
        MATCH (e:Entity {kg: $kg, id: $id})-[t:TRIPLET]-(o:Entity)
        MATCH (r:Relation {kg: $kg, idx: t.rel})
        RETURN startNode(t) = e AS outgoing, r.name AS relation, collect(o.id) AS ids""", kg=kg, id=entity_id)
    return {(r["outgoing"], r["relation"]): r["ids"] for r in rows}


def heading_counts(at: AppTest) -> dict[tuple[bool, str], int]:
    """The list's group headings, e.g. "**— links\\_to →** (330)", as {(outgoing, relation): count}."""
    found = {}
    for m in at.markdown:
        text = m.value.replace("\\", "")
        if text.startswith("**— ") or text.startswith("**← "):
            arrow, count = text.rsplit(" (", 1)
            relation = arrow.strip("*").strip("—←→ ")
            found[(text.startswith("**— "), relation)] = int(count.rstrip(")"))
    return found


def group_buttons(at: AppTest, n: int) -> list[str]:
    return [b.label for b in at.button if b.key and b.key.startswith(f"edge-{n}-")]


def canvas_args(at: AppTest) -> dict:
    """What the page passed the canvas component: elements, style rules, layout."""
    return json.loads(at.get("component_instance")[0].proto.json_args)


def canvas_counts(at: AppTest) -> tuple[int, int]:
    caption = next(c.value for c in at.caption if " nodes, " in c.value)
    nodes, edges = caption.split(" edges shown")[0].split(" nodes, ")
    return int(nodes), int(edges)


def send(at: AppTest, kg: str, centre: str, value: dict) -> None:
    """What the component does in a browser: its value changes, and the page reruns."""
    at.session_state[canvas.canvas_key(kg, centre)] = value
    at.run()
    assert not at.exception, [e.message for e in at.exception]


def canvas_triplets(at: AppTest) -> set[tuple[str, str, str]]:
    """The canvas' edges as (head id, relation, tail id)."""
    args = canvas_args(at)["elements"]
    entity = {n["data"]["id"]: n["data"]["entity"] for n in args["nodes"]}
    return {(entity[e["data"]["source"]], e["data"]["label"], entity[e["data"]["target"]]) for e in args["edges"]}


def cy_id(at: AppTest, entity_id: str) -> str:
    return next(n["data"]["id"] for n in canvas_args(at)["elements"]["nodes"] if n["data"]["entity"] == entity_id)


def test_hub_shows_true_counts_and_pages_through_every_group(ui_env, hub_kg, graph_store) -> None:
    truth = cypher_neighbours(graph_store, hub_kg, "hub")
    assert sum(len(ids) for ids in truth.values()) == LINKS + LIKES + POINTS > 300
    at = open_page("explore", kg=hub_kg, entity="hub")
    assert heading_counts(at) == {group: len(ids) for group, ids in truth.items()}
    assert f"#### Triplets ({LINKS + LIKES + POINTS})" in texts(at)
    groups = list(heading_counts(at))  # in page order: n is a group's place
    for n, group in enumerate(groups):
        clicks = 0
        while any(b.key == f"more-{n}" for b in at.button):
            assert len(group_buttons(at, n)) == 24 * (clicks + 1)  # a page at a time
            at.button(key=f"more-{n}").click().run()
            clicks += 1
        labels = group_buttons(at, n)
        assert len(labels) == len(truth[group])
        assert sorted(label.rsplit("`", 2)[1] for label in labels) == sorted(truth[group])  # each neighbour once
        assert clicks == -(-len(truth[group]) // 24) - 1


def test_relation_filter_applies_to_lists_and_canvas(ui_env, hub_kg) -> None:
    at = open_page("explore", kg=hub_kg, entity="hub")
    at.multiselect(key=f"explore_relations:{hub_kg}").select("points_at").run()
    assert heading_counts(at) == {(False, "points_at"): POINTS}
    assert f"#### Triplets ({POINTS} of {LINKS + LIKES + POINTS})" in texts(at)
    assert canvas_counts(at) == (POINTS + 1, POINTS)
    edges = canvas_args(at)["elements"]["edges"]
    assert {e["data"]["label"] for e in edges} == {"points_at"}
    centre = cy_id(at, "hub")
    assert all(e["data"]["target"] == centre for e in edges)  # directed: m_i -> hub


def test_canvas_loads_more_and_expands_a_node(ui_env, hub_kg, graph_store) -> None:
    at = open_page("explore", kg=hub_kg, entity="hub")
    args = canvas_args(at)
    nodes, edges = args["elements"]["nodes"], args["elements"]["edges"]
    assert canvas_counts(at) == (len(nodes), len(edges)) and len(edges) == canvas.PAGE  # the first 100 of 375
    assert {n["data"]["entity"] for n in nodes} <= {"hub"} | {o for ids in cypher_neighbours(graph_store, hub_kg, "hub").values() for o in ids}

    more = next(b for b in at.button if b.key and b.key.endswith("-more-0"))
    assert f"({LINKS + LIKES + POINTS - canvas.PAGE} not shown)" in more.label
    more.click().run()
    assert canvas_counts(at)[1] == 2 * canvas.PAGE
    version = canvas_args(at)["layout"]["kclip_version"]

    # Expand the spoke n3 (a double-click in the browser): all its triplets join the graph.
    before = canvas_triplets(at)
    send(at, hub_kg, "hub", {"action": "expand", "data": {"node_ids": [cy_id(at, "n3")]}, "timestamp": 1})
    n3 = {("n3", rel, o) if out else (o, rel, "n3")
          for (out, rel), ids in cypher_neighbours(graph_store, hub_kg, "n3").items() for o in ids}
    assert ("n3", "has_leaf", "leaf3") in n3 and not n3 <= before
    assert canvas_triplets(at) == before | n3
    grown = canvas_counts(at)
    assert grown[1] == len(before | n3) and grown[0] == len({x for h, _, t in before | n3 for x in (h, t)})
    assert canvas_args(at)["layout"]["kclip_version"] == version  # the component places expansions itself
    at.run()  # the component keeps its value across reruns: applied once only
    assert canvas_counts(at) == grown
    leaf = cy_id(at, "leaf3")

    # A click on a node picks it in the "open" control; Open makes it the page's entity.
    send(at, hub_kg, "hub", {"action": "tap", "data": {"target_id": leaf, "type": "tap", "target_group": "nodes"},
                             "timestamp": 2})
    key = canvas.canvas_key(hub_kg, "hub")
    assert at.selectbox(key=f"{key}-open").value == "leaf3"
    at.button(key=f"{key}-go").click().run()
    assert at.query_params["entity"] == "leaf3"
    assert canvas_counts(at) == (2, 1)  # leaf3 and n3


def test_canvas_state_survives_reruns_and_other_entities(ui_env, hub_kg) -> None:
    at = open_page("explore", kg=hub_kg, entity="hub")
    send(at, hub_kg, "hub", {"action": "expand", "data": {"node_ids": [cy_id(at, "n1")]}, "timestamp": 7})
    grown = canvas_counts(at)
    at.query_params["entity"] = "n1"
    at.session_state["explore_entity"] = "n1"
    at.run()
    assert canvas_counts(at) == (3, 3)  # n1, the hub (links_to and likes) and leaf1
    at.query_params["entity"] = "hub"
    at.session_state["explore_entity"] = "hub"
    at.run()
    assert canvas_counts(at) == grown


def test_image_entities_are_drawn_as_thumbnails(ui_env, ui_kg) -> None:
    at = open_page("explore", kg=ui_kg[0], entity="image:1")
    args = canvas_args(at)
    images = {n["data"]["id"] for n in args["elements"]["nodes"] if n["data"]["modality"] == "image"}
    thumbs = {rule["selector"].removeprefix("node#"): rule["style"]["background-image"]
              for rule in args["style"] if "background-image" in rule["style"]}
    assert images and set(thumbs) == images
    assert all(url.startswith("data:image/png;base64,") for url in thumbs.values())
    shapes = {rule["selector"]: rule["style"]["shape"] for rule in args["style"] if "shape" in rule["style"]}
    assert shapes == {"node[modality = 'text']": "round-rectangle", "node[modality = 'image']": "ellipse"}


# -- the canvas' state functions, on real expansions ---------------------------------------------

def test_state_functions_on_real_expansions(hub_kg, graph_store) -> None:
    hub = graph_store.entity(hub_kg, "hub").entity
    state = canvas.new_state(hub_kg, hub, None)
    first = graph_store.expand(hub_kg, ["hub"], limit=canvas.PAGE)[0]
    assert first.total == LINKS + LIKES + POINTS
    canvas.add_expansion(state, first)
    assert canvas.remaining(state, "hub") == first.total - canvas.PAGE
    assert canvas.remaining(state, "n3") is None and canvas.expandable(state, "n3")
    n3 = graph_store.expand(hub_kg, ["n3"], limit=canvas.PAGE)[0]
    assert canvas.add_expansion(state, n3) == 1  # leaf3; the hub is there already
    assert ("n3", "has_leaf", "leaf3") in state.edges and not canvas.expandable(state, "n3")
    elements = canvas.elements(state)
    assert len(elements["nodes"]) == len(state.nodes) and len(elements["edges"]) == len(state.edges)
    # A filter that hides every edge joining n3 to the hub leaves n3's part unconnected: pruned.
    del state.edges[("hub", "links_to", "n3")]
    state.edges.pop(("hub", "likes", "n3"), None)
    canvas.prune(state)
    assert "leaf3" not in state.nodes and "n3" not in state.nodes and "n3" not in state.loaded
    assert canvas.summary(state) == f"{len(state.nodes)} nodes, {len(state.edges)} edges shown"

"""The entity page's node-link canvas: the opened entity, its neighbours, and the nodes a user expands.

Drawn by the ``st-link-analysis`` component (Cytoscape.js in an iframe), chosen because
Cytoscape.js lays out and draws hundreds of nodes smoothly; because the component sends an
expansion (a double-click on a node, or the side panel's expand button) back to Python as its
value, so the next neighbours come from Neo4j; and because its styles are Cytoscape selector
rules, so text and image entities get their own colour and shape and each image entity is drawn
as its own thumbnail (``Style`` below: one rule per image node).

What the canvas shows is a ``CanvasState`` kept in ``st.session_state`` per KG and centre, so
reruns keep it: nodes and edges shown, which nodes were expanded, and how many of each one's
triplets are loaded (``PAGE`` at a time; "more" loads the next page). The functions that change a
state take the services' results and touch no Streamlit, so tests can drive them directly;
``canvas()`` renders a state and applies the component's events to it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable

import streamlit as st
from st_link_analysis import Event, st_link_analysis

from kclip.platform.graph_store import EntityRow, Expansion
from kclip.ui import services, widgets

PAGE = 100  # neighbours a node's expansion (and each "more") adds
HEIGHT = 520  # pixels; the component reads it once, when it mounts
KEPT_STATES = 20  # canvases remembered per session (one per KG and centre visited)
STATES = "canvas_states"  # session-state key of {(kg, centre id): CanvasState}
THUMB_SIDE = 64  # pixels of an image node's thumbnail
MODALITY_LOOK = {  # Cytoscape shape and colour per modality
    "text": {"shape": "round-rectangle", "background-color": "#4c78a8"},
    "image": {"shape": "ellipse", "background-color": "#f58518"},
}
TAP = Event("tap", "tap", "node")  # a node clicked: its "open" control preselects it

EdgeKey = tuple[str, str, str]  # (head id, relation, tail id)


@dataclass
class CanvasState:
    """What one canvas shows; entity ids key everything, Cytoscape ids derive from entity idx."""

    kg: str
    centre: str
    relations: tuple[str, ...] | None  # the relation filter it was loaded under; None = all
    nodes: dict[str, EntityRow] = field(default_factory=dict)  # by entity id, in order of arrival
    edges: dict[EdgeKey, str] = field(default_factory=dict)  # -> split
    loaded: dict[str, int] = field(default_factory=dict)  # expanded entity -> its triplets loaded so far
    totals: dict[str, int] = field(default_factory=dict)  # expanded entity -> its triplets under the filter
    last_event: int = 0  # timestamp of the last component event applied
    selected: str | None = None  # the entity last clicked on the canvas
    layout_version: int = 0  # changed whenever the whole layout must run again


# -- state: pure functions over services' results ------------------------------------------------

def new_state(kg: str, centre: EntityRow, relations: tuple[str, ...] | None) -> CanvasState:
    return CanvasState(kg, centre.id, relations, nodes={centre.id: centre})


def add_expansion(state: CanvasState, found: Expansion) -> int:
    """Put an expansion's triplets on the canvas; returns how many nodes that added."""
    before = len(state.nodes)
    entity = state.nodes.get(found.entity)
    if entity is None:  # an expansion is only asked for a node on the canvas
        return 0
    for edge in found.edges:
        state.nodes.setdefault(edge.other.id, edge.other)
        head, tail = (entity.id, edge.other.id) if edge.outgoing else (edge.other.id, entity.id)
        state.edges.setdefault((head, edge.relation, tail), edge.split)
    state.loaded[found.entity] = state.loaded.get(found.entity, 0) + len(found.edges)
    state.totals[found.entity] = found.total
    return len(state.nodes) - before


def remaining(state: CanvasState, entity_id: str) -> int | None:
    """Triplets of the node not loaded yet; None when it was never expanded."""
    if entity_id not in state.totals:
        return None
    return state.totals[entity_id] - state.loaded[entity_id]


def expandable(state: CanvasState, entity_id: str) -> bool:
    left = remaining(state, entity_id)
    return entity_id in state.nodes and (left is None or left > 0)


def prune(state: CanvasState) -> None:
    """Drop what no longer connects to the centre (after a filter hid the edges that joined it)."""
    linked: dict[str, set[str]] = {}
    for head, _, tail in state.edges:
        linked.setdefault(head, set()).add(tail)
        linked.setdefault(tail, set()).add(head)
    reached, frontier = {state.centre}, [state.centre]
    while frontier:
        for other in linked.get(frontier.pop(), ()):
            if other not in reached:
                reached.add(other)
                frontier.append(other)
    state.nodes = {k: v for k, v in state.nodes.items() if k in reached}
    state.edges = {k: v for k, v in state.edges.items() if k[0] in reached and k[2] in reached}
    for table in (state.loaded, state.totals):
        for gone in set(table) - reached:
            del table[gone]


def node_id(row: EntityRow) -> str:
    """The node's Cytoscape id: safe in selectors whatever the entity id holds."""
    return f"n{row.idx}"


def entity_of(state: CanvasState, cy_id: str) -> str | None:
    return next((row.id for row in state.nodes.values() if node_id(row) == cy_id), None)


def summary(state: CanvasState) -> str:
    return f"{len(state.nodes)} nodes, {len(state.edges)} edges shown"


# -- loading: one services.expand call (one Neo4j round trip) per change -------------------------

def load(state: CanvasState, entity_ids: list[str]) -> int:
    """The next page of each node's triplets (the first, for a node never expanded); returns nodes added."""
    todo = [i for i in entity_ids if expandable(state, i)]
    added = 0
    for skip in sorted({state.loaded.get(i, 0) for i in todo}):  # nodes at the same page share a call
        ids = [i for i in todo if state.loaded.get(i, 0) == skip]
        for found in services.expand(state.kg, ids, state.relations, skip=skip, limit=PAGE):
            added += add_expansion(state, found)
    return added


def refiltered(state: CanvasState, relations: tuple[str, ...] | None) -> CanvasState:
    """The same canvas under another relation filter: the centre and each node expanded so far,
    expanded again (first pages, one round trip), then whatever no longer joins the centre dropped."""
    fresh = new_state(state.kg, state.nodes[state.centre], relations)
    fresh.nodes.update(state.nodes)  # expansions below only add to nodes already on the canvas
    fresh.last_event, fresh.selected, fresh.layout_version = state.last_event, state.selected, state.layout_version + 1
    for found in services.expand(state.kg, list(state.loaded), relations, skip=0, limit=PAGE):
        add_expansion(fresh, found)
    prune(fresh)
    return fresh


def apply_event(state: CanvasState, event: dict[str, Any] | None) -> bool:
    """Apply a component value once (by its timestamp); returns whether it expanded a node."""
    if not event or event.get("timestamp", 0) == state.last_event:
        return False
    state.last_event = event.get("timestamp", 0)
    data = event.get("data") or {}
    if event.get("action") == "tap":
        state.selected = entity_of(state, str(data.get("target_id")))
        return False
    if event.get("action") != "expand":
        return False
    ids = [entity_of(state, str(i)) for i in data.get("node_ids", [])]
    load(state, [i for i in ids if i is not None])
    return True


# -- drawing -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Style:
    """One Cytoscape style rule, as ``st_link_analysis`` wants them (an object with ``dump()``).

    Its own ``NodeStyle``/``EdgeStyle`` only select on a ``label`` datum and cannot set shapes or
    per-node images; Cytoscape takes any selector and property, so this passes one through."""

    selector: str
    style: dict[str, Any]

    def dump(self) -> dict[str, Any]:
        return {"selector": self.selector, "style": dict(self.style)}


# Labels at 6 (nodes) and 5 (edges) graph units: legible once zoomed in enough to tell nodes apart,
# and hidden below 10 px on screen (the component's min-zoomed-font-size) so a big graph stays clean.
BASE_STYLES = (
    Style("node", {"label": "data(label)", "font-size": 6, "text-wrap": "ellipsis", "text-max-width": 80,
                   "border-width": 0.8}),
    *(Style(f"node[modality = '{m}']", look) for m, look in MODALITY_LOOK.items()),
    Style("edge", {"label": "data(label)", "font-size": 5, "target-arrow-shape": "triangle", "curve-style": "bezier"}),
)


def node_label(row: EntityRow, max_chars: int = 28) -> str:
    text = (row.text or row.id).replace("\n", " ")
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


def elements(state: CanvasState) -> dict[str, list[dict]]:
    """Cytoscape elements: nodes carry label, entity id and modality; edges the relation, head to tail."""
    nodes = [{"data": {"id": node_id(row), "label": node_label(row), "entity": row.id, "modality": row.modality}}
             for row in state.nodes.values()]
    edges = [{"data": {"id": f"e{state.nodes[h].idx}-{state.nodes[t].idx}-{relation}", "label": relation,
                       "source": node_id(state.nodes[h]), "target": node_id(state.nodes[t]), "split": split}}
             for (h, relation, t), split in state.edges.items()]
    return {"nodes": nodes, "edges": edges}


def styles(state: CanvasState, thumbnail: Callable[[EntityRow], str | None]) -> list[Style]:
    """The base rules, the centre marked, and each image node drawn as its image (a small
    ``data:`` URL from ``thumbnail``), selected by its Cytoscape id."""
    centre = node_id(state.nodes[state.centre])
    rules = [*BASE_STYLES, Style(f"node#{centre}", {"width": 30, "height": 30, "border-width": 2,
                                                      "border-color": "#222222"})]
    for row in state.nodes.values():
        url = thumbnail(row) if row.modality == "image" else None
        if url:
            rules.append(Style(f"node#{node_id(row)}", {
                "background-image": url, "background-fit": "cover", "background-clip": "node",
                "background-width": "100%", "background-height": "100%"}))
    return rules


def layout(state: CanvasState) -> dict[str, Any]:
    """Rings around the centre by hops. The component runs the layout only when this dict changes
    (its own expansions place new nodes themselves), hence the version in it."""
    return {"name": "breadthfirst", "circle": True, "directed": False, "roots": f"#{node_id(state.nodes[state.centre])}",
            "spacingFactor": 1.1, "avoidOverlap": True, "fit": True, "padding": 20, "animate": False,
            "kclip_version": state.layout_version}


# -- the Streamlit piece -------------------------------------------------------------------------

def canvas_key(kg: str, centre: str) -> str:
    """The component's widget key: one per KG and centre, so each keeps its own last event."""
    return "canvas-" + hashlib.sha1(f"{kg}\x00{centre}".encode()).hexdigest()[:16]


def current_state(kg: str, centre: EntityRow, relations: tuple[str, ...] | None) -> CanvasState:
    """This session's canvas for (kg, centre), created with the centre expanded, or reloaded under
    a changed relation filter; the least recently used ones beyond ``KEPT_STATES`` are forgotten."""
    states: dict[tuple[str, str], CanvasState] = st.session_state.setdefault(STATES, {})
    state = states.pop((kg, centre.id), None)
    if state is None:
        state = new_state(kg, centre, relations)
        last = st.session_state.get(canvas_key(kg, centre.id))
        state.last_event = (last or {}).get("timestamp", 0)  # a forgotten canvas's old event is not new
        load(state, [centre.id])
    elif state.relations != relations:
        state = refiltered(state, relations)
    states[(kg, centre.id)] = state
    while len(states) > KEPT_STATES:
        del states[next(iter(states))]
    return state


def canvas(kg: str, centre: EntityRow, relations: tuple[str, ...] | None, on_open: Callable[[str], None]) -> None:
    """The canvas for ``centre``, its caption, "more" buttons and a control to open any node shown."""
    state = current_state(kg, centre, relations)
    key = canvas_key(kg, centre.id)
    # The event that made this run (the value is in session state before the component is drawn):
    # applied first, so the component gets the grown graph; it places an expansion's nodes itself.
    apply_event(state, st.session_state.get(key))
    look = styles(state, lambda row: services.thumbnail_url(row, THUMB_SIDE))
    st_link_analysis(elements(state), layout=layout(state), node_styles=look, height=HEIGHT, key=key,
                     node_actions=["expand"], events=[TAP])
    st.caption(summary(state) + " · double-click a node (or select it, then the expand button) to add its neighbours")
    more_buttons(state, key)
    open_control(state, key, on_open)


def more_buttons(state: CanvasState, key: str) -> None:
    """A "more" button for each expanded node with triplets not loaded yet."""
    for n, entity_id in enumerate(i for i in state.loaded if (remaining(state, i) or 0) > 0):
        left = remaining(state, entity_id)
        label = widgets.entity_label(state.nodes[entity_id], max_chars=40)
        st.button(f"{min(PAGE, left)} more of {label} ({left} not shown)", key=f"{key}-more-{n}",
                  on_click=load_more, args=(state, entity_id), type="tertiary", icon=":material/add_circle:")


def load_more(state: CanvasState, entity_id: str) -> None:
    if load(state, [entity_id]):
        state.layout_version += 1


def open_control(state: CanvasState, key: str, on_open: Callable[[str], None]) -> None:
    """Open any node of the canvas as the page's entity; the node last clicked is preselected."""
    ids = list(state.nodes)
    pick_key = f"{key}-open"
    if state.selected in state.nodes and st.session_state.get(f"{pick_key}-for") != state.selected:
        st.session_state[pick_key] = state.selected  # follow a new click on the canvas, once
        st.session_state[f"{pick_key}-for"] = state.selected
    pick, go = st.columns([4, 1], vertical_alignment="bottom")
    with pick:
        chosen = st.selectbox("Open a node of the graph", ids, key=pick_key,
                              format_func=lambda i: widgets.entity_label(state.nodes[i], markdown=False))
    with go:
        st.button("Open", key=f"{key}-go", on_click=on_open, args=(chosen,), disabled=chosen == state.centre,
                  icon=":material/open_in_new:")

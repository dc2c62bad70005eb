"""Explore: full-text search over the current KG, and one entity with its triplets.

The open entity lives in the URL (``?kg=KG&entity=ID``), so an address points at an entity; each
neighbour in the entity's triplets is a button that opens it.
"""

from __future__ import annotations

import streamlit as st

from kclip.platform.errors import NotFoundError
from kclip.ui import services, widgets
from kclip.ui.services import EdgeGroup, EntityDetail, EntityRow

ENTITY_STATE = "explore_entity"
SHOWN_PER_GROUP = 24  # neighbours listed per relation before "… and N more"


def open_entity(entity_id: str) -> None:
    st.session_state[ENTITY_STATE] = entity_id
    st.query_params["entity"] = entity_id


def entity_button(row: EntityRow, key: str, suffix: str = "") -> None:
    st.button(widgets.entity_label(row) + suffix, key=key, on_click=open_entity, args=(row.id,), type="tertiary")


def search_panel(kg: str) -> None:
    query = st.text_input("Search entities", key="explore_q", placeholder="a word, e.g. circle, then Enter",
                          help="Full-text search over entity texts (Lucene syntax is taken literally).")
    if query.strip():
        hits = services.search_entities(kg, query, limit=30)
        shown = widgets.md(query.strip())
        st.caption(f"{len(hits)} match(es) for “{shown}”" if hits else f"No entity matches “{shown}”.")
        for i, (row, score) in enumerate(hits):
            entity_button(row, key=f"hit-{i}", suffix=f"  ({score:.2f})")
    else:
        st.caption("Some entities to start from:")
        for i, row in enumerate(services.sample_entities(kg, limit=12)):
            entity_button(row, key=f"sample-{i}")


def entity_header(detail: EntityDetail) -> None:
    row = detail.entity
    st.subheader(widgets.entity_label(row, max_chars=120))
    left, right = st.columns([1, 2])
    with left:
        widgets.thumbnail(row, width=240)
    with right:
        st.markdown(f"**id** {widgets.md_code(row.id)}  \n**modality** {row.modality}")
        if row.text:
            st.markdown(f"**text** {widgets.md(row.text)}")
        if detail.image_size:
            st.caption(f"image {detail.image_size[0]}×{detail.image_size[1]} px")
        if detail.attributes:
            st.markdown("**attributes**")
            st.json(detail.attributes, expanded=True)
    nav = st.columns(2)
    with nav[0]:
        widgets.page_link("neighbours", "Nearest neighbours by embedding",
                          kg=st.session_state[widgets.KG_STATE], entity=row.id)
    with nav[1]:
        widgets.page_link("predict", "Predict links")


def edge_group(group: EdgeGroup, n: int) -> None:
    relation = widgets.md(group.relation)
    arrow = f"— {relation} →" if group.outgoing else f"← {relation} —"
    st.markdown(f"**{arrow}** ({len(group.edges)})")
    for j, edge in enumerate(group.edges[:SHOWN_PER_GROUP]):
        split = "" if edge.split == "train" else f"  [{edge.split}]"
        entity_button(edge.other, key=f"edge-{n}-{j}", suffix=split)
    if len(group.edges) > SHOWN_PER_GROUP:
        st.caption(f"… and {len(group.edges) - SHOWN_PER_GROUP} more")


def triplets_panel(kg: str, entity_id: str) -> None:
    edges = services.entity_triplets(kg, entity_id)
    st.markdown(f"#### Triplets ({len(edges)})")
    if not edges:
        st.caption("This entity is in no triplet.")
        return
    groups = services.group_edges(edges)
    outgoing, incoming = st.columns(2)
    with outgoing:
        st.caption("as head (entity → relation → other)")
        for n, group in enumerate(groups):
            if group.outgoing:
                edge_group(group, n)
    with incoming:
        st.caption("as tail (other → relation → entity)")
        for n, group in enumerate(groups):
            if not group.outgoing:
                edge_group(group, n)


def entity_panel(kg: str, entity_id: str) -> None:
    try:
        detail = services.entity(kg, entity_id)
    except NotFoundError:
        st.info(f"KG {widgets.md(kg)} has no entity {widgets.md_code(entity_id)}; search for another one.")
        st.session_state.pop(ENTITY_STATE, None)
        del st.query_params["entity"]
        return
    entity_header(detail)
    triplets_panel(kg, entity_id)


def main() -> None:
    st.title("Explore")
    with widgets.user_errors():
        kg = widgets.current_kg()
        widgets.kg_caption(kg)
        entity_id = st.query_params.get("entity") or st.session_state.get(ENTITY_STATE)
        search, view = st.columns([1, 2], gap="large")
        with search:
            search_panel(kg)
        with view:
            if entity_id:
                st.query_params["entity"] = entity_id
                entity_panel(kg, entity_id)
            else:
                st.info("Search for an entity, or pick one on the left, to see its triplets.",
                        icon=widgets.ICON["explore"])


# Streamlit runs each page file as __main__; importing the module (kclip.ui.views...) renders nothing.
if __name__ == "__main__":
    main()

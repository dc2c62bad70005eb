"""Neighbours: the entities nearest to one entity in the shared embedding space, images and texts alike.

Needs the KG's vector index, which ``kclip embed --run RUN --kg KG`` builds from a trained run.
The centre entity lives in the URL (``?kg=KG&entity=ID``).
"""

from __future__ import annotations

import streamlit as st

from kclip.platform.errors import NotFoundError
from kclip.ui import services, widgets
from kclip.ui.services import EntityRow, NoEmbeddings

ENTITY_STATE = "neighbours_entity"
COLUMNS = 5


def centre_on(entity_id: str) -> None:
    st.session_state[ENTITY_STATE] = entity_id
    st.query_params["entity"] = entity_id


def embed_hint(kg: str) -> None:
    runs = services.runs_for_kg(kg)
    run = runs[0].name if runs else "RUN"
    train = "" if runs else f" (train one first: `kclip train --kg {kg} --config tiny`)"
    st.info(f"No embeddings for this entity yet. Embed the KG with a trained run{train}:\n\n"
            f"`kclip embed --run {run} --kg {kg}`\n\nThat writes every entity's embedding to Neo4j "
            "and builds the vector index this page searches.", icon=widgets.ICON["neighbours"])


def pick_centre(kg: str) -> EntityRow | None:
    """The entity from the URL, unless a new search pick replaces it (then the pick goes into the URL)."""
    picked = widgets.entity_picker(kg, "Entity", key="neighbours")
    # Re-centre only when the pick changed: "centre here" must not be undone by a stale pick.
    if picked is not None and picked.id != st.session_state.get("neighbours_last_pick"):
        st.session_state["neighbours_last_pick"] = picked.id
        centre_on(picked.id)
    entity_id = st.query_params.get("entity") or st.session_state.get(ENTITY_STATE)
    if not entity_id:
        return None
    try:
        centre = services.entity(kg, entity_id).entity
    except NotFoundError:
        st.session_state.pop(ENTITY_STATE, None)
        del st.query_params["entity"]
        return None
    centre_on(entity_id)
    return centre


def neighbour_card(kg: str, row: EntityRow, score: float, n: int) -> None:
    widgets.thumbnail(row, width=120)
    st.markdown(widgets.entity_label(row, max_chars=50))
    st.caption(f"similarity {score:.3f}")
    st.button("centre here", key=f"centre-{n}", on_click=centre_on, args=(row.id,), type="tertiary")
    widgets.page_link("explore", "explore", kg=kg, entity=row.id)


def neighbours_grid(kg: str, centre: EntityRow, k: int) -> None:
    try:
        found = services.similar_entities(kg, centre.id, k)
    except NoEmbeddings:
        embed_hint(kg)
        return
    st.caption(f"{len(found)} nearest entities to {widgets.entity_label(centre)}, by cosine similarity")
    for start in range(0, len(found), COLUMNS):
        for n, (col, (row, score)) in enumerate(zip(st.columns(COLUMNS), found[start:start + COLUMNS]), start):
            with col:
                neighbour_card(kg, row, score, n)


def main() -> None:
    st.title("Neighbours")
    with widgets.user_errors():
        kg = widgets.current_kg()
        widgets.kg_caption(kg)
        search, k_col = st.columns([3, 1])
        with search:
            centre = pick_centre(kg)
        k = k_col.slider("How many", 1, 50, 10, key="neighbours_k")
        if centre is None:
            st.info("Pick an entity to see its nearest neighbours, images and texts alike.",
                    icon=widgets.ICON["neighbours"])
            return
        head, info = st.columns([1, 6], vertical_alignment="center")
        with head:
            widgets.thumbnail(centre, width=120)
        info.markdown(f"### {widgets.entity_label(centre, max_chars=100)}")
        neighbours_grid(kg, centre, k)


# Streamlit runs each page file as __main__; importing the module (kclip.ui.views...) renders nothing.
if __name__ == "__main__":
    main()

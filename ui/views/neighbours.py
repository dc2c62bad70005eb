"""Neighbours: the entities nearest to a query in the KG's shared embedding space.

The query is one of three, and the page always says which: an entity of the KG (its stored
embedding; ``?kg=KG&entity=ID`` in the URL), a free text, or an uploaded image. Texts and images
are embedded by the run that embedded the KG (recorded by ``kclip embed``), so they land in the
same space; this page never falls back to keyword search. "Show" keeps only text or only image
neighbours, inside the vector search (k of them, not a filtered top k): a text entity's nearest
images, an image's nearest texts.

Needs the KG's vector index, which ``kclip embed --run RUN --kg KG`` builds from a trained run.
"""

from __future__ import annotations

import streamlit as st

from kclip.platform.errors import NotFoundError
from kclip.ui import services, widgets
from kclip.ui.services import EntityRow, NoEmbeddings, NoQueryModel

ENTITY_STATE = "neighbours_entity"
MODE = "neighbours_mode"
ENTITY, TEXT, IMAGE = "an entity", "free text", "an image"
SHOW = {"all": None, "texts": "text", "images": "image"}  # choice -> modality kept
IMAGE_TYPES = ["png", "jpg", "jpeg", "webp", "gif", "bmp"]
COLUMNS = 5


def centre_on(entity_id: str) -> None:
    st.session_state[ENTITY_STATE] = entity_id
    st.query_params["entity"] = entity_id


def centre_on_neighbour(entity_id: str) -> None:
    """A card's "centre here": that entity becomes the query, whatever the mode was."""
    centre_on(entity_id)
    st.session_state[MODE] = ENTITY


def embed_hint(kg: str) -> None:
    runs = services.runs_for_kg(kg)
    run = runs[0].name if runs else "RUN"
    train = "" if runs else f" (train one first: `kclip train --kg {kg} --config tiny`)"
    st.info(f"No embeddings for this query yet. Embed the KG with a trained run{train}:\n\n"
            f"`kclip embed --run {run} --kg {kg}`\n\nThat writes every entity's embedding to Neo4j "
            "and builds the vector index this page searches.", icon=widgets.ICON["neighbours"])


# -- the three kinds of query -------------------------------------------------------------------

def pick_centre(kg: str) -> EntityRow | None:
    """The entity from the URL, unless a new search pick replaces it (then the pick goes into the URL)."""
    picked = widgets.entity_picker(kg, "Entity (found by keyword, then searched by embedding)", key="neighbours")
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


def entity_query(kg: str, k: int, modality: str | None) -> list[tuple[EntityRow, float]] | None:
    centre = pick_centre(kg)
    if centre is None:
        st.info("Pick an entity to see its nearest neighbours.", icon=widgets.ICON["neighbours"])
        return None
    head, info = st.columns([1, 6], vertical_alignment="center")
    with head:
        widgets.thumbnail(centre, width=96)
    info.markdown(f"### Nearest to the entity {widgets.entity_label(centre, max_chars=100)}")
    return services.nearest_to_entity(kg, centre.id, k, modality)


def query_model_note(kg: str) -> None:
    origin = services.embedding_origin(kg)
    if origin is not None:
        st.caption(f"Embedded by run {widgets.md_code(origin.run)} at step {origin.step:,}, the run that "
                   "embedded this KG: the query is compared with entities by meaning, not by keyword.")


def text_query(kg: str, k: int, modality: str | None) -> list[tuple[EntityRow, float]] | None:
    text = st.text_input("Free text", key="neighbours_text", placeholder="e.g. a small red circle, then Enter")
    query_model_note(kg)
    if not text.strip():
        st.info("Type a text to see the entities nearest to its embedding.", icon=widgets.ICON["neighbours"])
        return None
    st.markdown(f"### Nearest to the text “{widgets.md(text.strip())}”")
    return services.nearest_to_text(kg, text, k, modality)


def image_query(kg: str, k: int, modality: str | None) -> list[tuple[EntityRow, float]] | None:
    upload = st.file_uploader("Image", type=IMAGE_TYPES, key="neighbours_image")
    query_model_note(kg)
    if upload is None:
        st.info("Upload an image to see the entities nearest to its embedding.", icon=widgets.ICON["neighbours"])
        return None
    head, info = st.columns([1, 6], vertical_alignment="center")
    head.image(upload, width=96)
    info.markdown(f"### Nearest to the image {widgets.md_code(upload.name)}")
    return services.nearest_to_image(kg, upload.getvalue(), k, modality, name=upload.name)


QUERIES = {ENTITY: entity_query, TEXT: text_query, IMAGE: image_query}


# -- results --------------------------------------------------------------------------------------

def collapse_warning(kg: str) -> None:
    mean = services.mean_pair_cosine(kg)
    if mean is not None and mean > services.COLLAPSED_MEAN_COSINE:
        st.warning(f"This embedding space looks collapsed: sampled pairs of entities have a mean cosine "
                   f"similarity of {mean:.3f} (above {services.COLLAPSED_MEAN_COSINE}), so every entity is "
                   "“near” every other and these neighbours say little. Typical of an untrained or barely "
                   "trained run: train longer, then run `kclip embed` again.", icon=":material/warning:")


def neighbour_card(kg: str, row: EntityRow, score: float, n: int) -> None:
    widgets.thumbnail(row, width=120)
    st.markdown(widgets.entity_label(row, max_chars=50))
    st.caption(f"similarity {score:.3f}")
    st.button("centre here", key=f"centre-{n}", on_click=centre_on_neighbour, args=(row.id,), type="tertiary")
    widgets.page_link("explore", "explore", kg=kg, entity=row.id)


def neighbours_grid(kg: str, found: list[tuple[EntityRow, float]], k: int, show: str) -> None:
    kind = "entities" if show == "all" else show
    fewer = f" (the KG has no more embedded {kind})" if len(found) < k else ""
    st.caption(f"{len(found)} nearest {kind}{fewer}, by cosine similarity (−1 to 1)")
    for start in range(0, len(found), COLUMNS):
        for n, (col, (row, score)) in enumerate(zip(st.columns(COLUMNS), found[start:start + COLUMNS]), start):
            with col:
                neighbour_card(kg, row, score, n)


def has_modality(kg: str, modality: str | None) -> bool:
    return modality is None or services.kg_stats(kg).entities.get(modality, 0) > 0


def main() -> None:
    st.title("Neighbours")
    with widgets.user_errors():
        kg = widgets.current_kg()
        widgets.kg_caption(kg)
        mode_col, show_col, k_col = st.columns([2, 2, 1])
        mode = mode_col.radio("Query by", list(QUERIES), key=MODE, horizontal=True,
                              help="An entity's stored embedding, or a text or image embedded by the KG's run.")
        show = show_col.radio("Show", list(SHOW), key="neighbours_show", horizontal=True,
                              help="Keep only text or only image neighbours (filtered inside the vector search).")
        k = k_col.slider("How many", 1, 50, 10, key="neighbours_k")
        if not has_modality(kg, SHOW[show]):
            st.info(f"This KG has no {show}: nothing to show.", icon=widgets.ICON["neighbours"])
            return
        try:
            found = QUERIES[mode](kg, k, SHOW[show])
        except NoEmbeddings:
            embed_hint(kg)
            return
        except NoQueryModel as exc:
            st.info(str(exc), icon=widgets.ICON["neighbours"])
            return
        if found is not None:
            collapse_warning(kg)
            neighbours_grid(kg, found, k, show)


# Streamlit runs each page file as __main__; importing the module (kclip.ui.views...) renders nothing.
if __name__ == "__main__":
    main()

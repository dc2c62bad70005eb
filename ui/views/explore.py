"""Explore: full-text search over the current KG, and one entity with its triplets.

The open entity lives in the URL (``?kg=KG&entity=ID``), so an address points at an entity; each
neighbour in the entity's triplets is a button that opens it. The entity's graph (``ui/canvas.py``)
shows it with its neighbours, expandable node by node; below, its triplets are listed by
(direction, relation) with each group's true size, a page at a time. A relation filter applies to both.
"""

from __future__ import annotations

import streamlit as st

from kclip.platform.errors import NotFoundError
from kclip.ui import canvas, services, widgets
from kclip.ui.services import EdgeCount, EntityDetail, EntityRow

ENTITY_STATE = "explore_entity"
SHOWN_PER_GROUP = 24  # neighbours listed per (direction, relation) group; each "more" adds as many
PAGES_STATE = "explore_pages"  # {(kg, entity, outgoing, relation): neighbours listed}
RELATIONS_STATE = "explore_relations"  # the relation filter's widget key, per KG


def open_entity(entity_id: str) -> None:
    st.session_state[ENTITY_STATE] = entity_id
    st.query_params["entity"] = entity_id


def entity_button(row: EntityRow, key: str, suffix: str = "") -> None:
    st.button(widgets.entity_label(row) + suffix, key=key, on_click=open_entity, args=(row.id,), type="tertiary")


SEARCH_PER_PAGE = 25
SEARCH_PAGE_STATE = "explore_search_page"  # ((kg, query), page number): the page shown, and of what
# Hit labels read from the left, wrapped or not (a tertiary button centres its label).
SEARCH_ROWS_CSS = "<style>.st-key-explore_search_rows button { justify-content: flex-start; text-align: left; }</style>"


def search_page_number(kg: str, query: str) -> int:
    """The page of matches to show: the first again whenever the KG or the query changes."""
    shown = st.session_state.get(SEARCH_PAGE_STATE)
    if not shown or shown[0] != (kg, query):
        st.session_state[SEARCH_PAGE_STATE] = ((kg, query), 0)
        return 0
    return shown[1]


def turn_search_page(step: int) -> None:
    searched, page = st.session_state[SEARCH_PAGE_STATE]
    st.session_state[SEARCH_PAGE_STATE] = (searched, max(0, page + step))


def search_rows(rows: list[tuple[EntityRow, float | None]], key: str) -> None:
    """Compact rows, buttons that open their entity: the image of an image entity (a column kept
    only when the page has one), the label with the id, the score aligned right."""
    images = [services.entity_image(row) if row.modality == "image" else None for row, _ in rows]
    spec = [2, 12, 3] if any(image is not None for image in images) else [12, 3]
    st.html(SEARCH_ROWS_CSS)
    with st.container(key="explore_search_rows", gap="xxsmall"):
        for i, ((row, score), image) in enumerate(zip(rows, images)):
            *thumb, label, right = st.columns(spec, gap="xsmall", vertical_alignment="center")
            if image is not None:
                thumb[0].image(image, width=40)
            if label.button(widgets.entity_label(row, max_chars=40), key=f"{key}-{i}", type="tertiary", wrap=True):
                open_entity(row.id)
                st.rerun()  # the whole page: the entity view is outside this fragment
            if score is not None:
                right.caption(f"{score:.2f}", text_alignment="right")


def search_summary(page: services.SearchPage, query: str) -> str:
    shown = widgets.md(query)
    if not page.total:
        return f"No entity matches “{shown}”."
    return f"{page.skip + 1:,}–{page.skip + len(page.hits):,} of **{page.total:,}** matches for “{shown}”"


def search_pager(page: services.SearchPage) -> None:
    back, forward = st.columns(2)
    back.button("Previous", key="explore_search_prev", icon=":material/chevron_left:", width="stretch",
                disabled=page.skip == 0, on_click=turn_search_page, args=(-1,))
    forward.button("Next", key="explore_search_next", icon=":material/chevron_right:", icon_position="right",
                   width="stretch", disabled=page.skip + len(page.hits) >= page.total,
                   on_click=turn_search_page, args=(1,))


@st.fragment  # typing and paging rerun this panel only, not the entity view beside it
def search_panel(kg: str) -> None:
    with widgets.user_errors():  # a fragment's own reruns happen outside main()'s
        query = " ".join(st.text_input(
            "Search entities", key="explore_q", type="search", live=True, placeholder="words or their start, e.g. circ",
            help="Matches as you type: every word must be in an entity's text or id, the last one may be the start "
                 "of a word; whole-word matches of it come first. Lucene syntax is taken literally.").split())
        if not query:
            st.caption("Some entities to start from:")
            search_rows([(row, None) for row in services.sample_entities(kg, limit=12)], key="sample")
            return
        page = services.search_page(kg, query, search_page_number(kg, query) * SEARCH_PER_PAGE, SEARCH_PER_PAGE)
        st.caption(search_summary(page, query))
        if page.note:
            st.caption(f"Note: {page.note}.")
        search_rows(page.hits, key="hit")
        if page.total > SEARCH_PER_PAGE:
            search_pager(page)


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
        widgets.page_link("predict", "Predict links", kg=st.session_state[widgets.KG_STATE], head=row.id)


def relation_filter(kg: str) -> tuple[str, ...] | None:
    """The relations the user chose to see (graph and lists alike); None when all."""
    names = [r.name for r in services.relations(kg)]
    chosen = st.multiselect("Relations shown", names, key=f"{RELATIONS_STATE}:{kg}", placeholder="all relations",
                            help="Only triplets of these relations, in the graph and in the lists below.")
    return tuple(sorted(chosen)) or None


def graph_panel(kg: str, row: EntityRow, relations: tuple[str, ...] | None) -> None:
    st.markdown("#### Graph")
    canvas.canvas(kg, row, relations, on_open=open_entity)


def show_more(group_key: tuple) -> None:
    pages = st.session_state.setdefault(PAGES_STATE, {})
    pages[group_key] = pages.get(group_key, SHOWN_PER_GROUP) + SHOWN_PER_GROUP


def edge_group(kg: str, entity_id: str, group: EdgeCount, n: int) -> None:
    """One (direction, relation) group: its true size, the pages loaded so far, a button for the next."""
    relation = widgets.md(group.relation)
    arrow = f"— {relation} →" if group.outgoing else f"← {relation} —"
    st.markdown(f"**{arrow}** ({group.count})")
    group_key = (kg, entity_id, group.outgoing, group.relation)
    shown = min(st.session_state.get(PAGES_STATE, {}).get(group_key, SHOWN_PER_GROUP), group.count)
    j = 0
    for skip in range(0, shown, SHOWN_PER_GROUP):  # page by page: each is cached, "more" fetches one
        for edge in services.edge_page(kg, entity_id, group.relation, group.outgoing, skip, SHOWN_PER_GROUP):
            split = "" if edge.split == "train" else f"  [{edge.split}]"
            entity_button(edge.other, key=f"edge-{n}-{j}", suffix=split)
            j += 1
    left = group.count - shown
    if left > 0:
        st.button(f"{min(SHOWN_PER_GROUP, left)} more ({left} not shown)", key=f"more-{n}", on_click=show_more,
                  args=(group_key,), type="tertiary", icon=":material/expand_more:")


def triplets_panel(kg: str, entity_id: str, relations: tuple[str, ...] | None) -> None:
    counts = services.edge_counts(kg, entity_id)
    groups = [g for g in counts if relations is None or g.relation in relations]
    shown, total = sum(g.count for g in groups), sum(g.count for g in counts)
    st.markdown(f"#### Triplets ({shown})" if shown == total else f"#### Triplets ({shown} of {total})")
    if not groups:
        st.caption("This entity is in no triplet." if not counts else "None of its triplets has the relations chosen.")
        return
    outgoing, incoming = st.columns(2)
    with outgoing:
        st.caption("as head (entity → relation → other)")
    with incoming:
        st.caption("as tail (other → relation → entity)")
    for n, group in enumerate(groups):
        with outgoing if group.outgoing else incoming:
            edge_group(kg, entity_id, group, n)


def entity_panel(kg: str, entity_id: str) -> None:
    try:
        detail = services.entity(kg, entity_id)
    except NotFoundError:
        st.info(f"KG {widgets.md(kg)} has no entity {widgets.md_code(entity_id)}; search for another one.")
        st.session_state.pop(ENTITY_STATE, None)
        del st.query_params["entity"]
        return
    entity_header(detail)
    relations = relation_filter(kg)
    graph_panel(kg, detail.entity, relations)
    triplets_panel(kg, entity_id, relations)


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

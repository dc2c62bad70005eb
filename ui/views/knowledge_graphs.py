"""Home page: every KG in Neo4j with its counts, and the picker for the KG the other pages use."""

from __future__ import annotations

import streamlit as st

from kclip.ui import services, widgets
from kclip.ui.services import KGStats

PICKER = "kg_picker"


def overview_rows(all_stats: list[KGStats]) -> list[dict[str, object]]:
    """One table row per KG: entities by modality, relations, triplets by split."""
    rows = []
    for s in all_stats:
        rows.append({
            "KG": s.kg,
            "text entities": s.entities.get("text", 0),
            "image entities": s.entities.get("image", 0),
            "relations": s.relations,
            **{f"{split} triplets": n for split, n in s.triplets.items()},
            "all triplets": s.total_triplets,
        })
    return rows


def _picked() -> None:
    widgets.remember_kg(st.session_state[PICKER])


def kg_picker(kgs: list[str], current: str) -> str:
    # Keep the widget in step with ?kg= (a link may have changed it since the last run).
    st.session_state[PICKER] = current
    return st.selectbox("Current KG", kgs, key=PICKER, on_change=_picked,
                        help="Explore, Predict and Neighbours work on this KG.")


def kg_details(stats: KGStats) -> None:
    cols = st.columns(4)
    cols[0].metric("Entities", f"{stats.total_entities:,}")
    cols[1].metric("Image entities", f"{stats.entities.get('image', 0):,}")
    cols[2].metric("Relations", f"{stats.relations:,}")
    cols[3].metric("Triplets", f"{stats.total_triplets:,}")
    st.caption(" · ".join(f"{split}: {n:,}" for split, n in stats.triplets.items()) + " triplets by split")
    links = st.columns(3)
    for col, (page, label) in zip(links, [("explore", "Explore its entities"),
                                          ("predict", "Predict links with a trained run"),
                                          ("neighbours", "Nearest neighbours by embedding")]):
        with col:
            widgets.page_link(page, label)


def main() -> None:
    st.title("Knowledge graphs")
    st.caption("The KGs loaded into Neo4j. Pick one to explore, predict on, or search by embedding.")
    with widgets.user_errors():
        kgs = services.list_kgs()
        if not kgs:
            widgets.no_kgs_hint()
            return
        current = widgets.current_kg()
        st.dataframe(overview_rows([services.kg_stats(kg) for kg in kgs]), hide_index=True)
        picked = kg_picker(kgs, current)
        st.subheader(widgets.md(picked))
        kg_details(services.kg_stats(picked))


# Streamlit runs each page file as __main__; importing the module (kclip.ui.views...) renders nothing.
if __name__ == "__main__":
    main()

"""Home page: every KG in Neo4j with its counts, its runs and embeddings, and the picker for the
KG the other pages use."""

from __future__ import annotations

from urllib.parse import urlencode

import streamlit as st

from kclip.ui import services, widgets
from kclip.ui.services import KGEmbeddings, KGStats

PICKER = "kg_picker"
OVERVIEW_COLUMNS = {"runs page": st.column_config.LinkColumn("runs page", display_text="runs ↗")}


def embeddings_label(embeddings: KGEmbeddings | None) -> str:
    """What `kclip embed` left on a KG: "none", or the vectors' dimension and the run that wrote them."""
    if embeddings is None:
        return "none"
    if embeddings.origin is None:
        return f"{embeddings.dimensions}-d (run not recorded)"
    origin = embeddings.origin
    label = f"{embeddings.dimensions}-d, run {origin.run} (step {origin.step:,})"
    return label + (", KG loaded again since" if embeddings.stale else "")


def runs_url(kg: str) -> str:
    # Relative to the current page's URL, so it also works under a server base path.
    return "./runs?" + urlencode({"kg": kg})


def overview_rows(all_stats: list[KGStats], run_counts: dict[str, int],
                  embeddings: dict[str, KGEmbeddings | None]) -> list[dict[str, object]]:
    """One table row per KG: entities by modality, relations, triplets by split, runs, embeddings."""
    rows = []
    for s in all_stats:
        rows.append({
            "KG": s.kg,
            "text entities": s.entities.get("text", 0),
            "image entities": s.entities.get("image", 0),
            "relations": s.relations,
            **{f"{split} triplets": n for split, n in s.triplets.items()},
            "all triplets": s.total_triplets,
            "runs": run_counts.get(s.kg, 0),
            "embeddings": embeddings_label(embeddings[s.kg]),
            "runs page": runs_url(s.kg),
        })
    return rows


def _picked() -> None:
    widgets.remember_kg(st.session_state[PICKER])


def kg_picker(kgs: list[str], current: str) -> str:
    # Keep the widget in step with ?kg= (a link may have changed it since the last run).
    st.session_state[PICKER] = current
    return st.selectbox("Current KG", kgs, key=PICKER, on_change=_picked,
                        help="Explore, Predict and Neighbours work on this KG.")


def kg_details(stats: KGStats, runs: int, embeddings: KGEmbeddings | None) -> None:
    cols = st.columns(4)
    cols[0].metric("Entities", f"{stats.total_entities:,}")
    cols[1].metric("Image entities", f"{stats.entities.get('image', 0):,}")
    cols[2].metric("Relations", f"{stats.relations:,}")
    cols[3].metric("Triplets", f"{stats.total_triplets:,}")
    st.caption(" · ".join(f"{split}: {n:,}" for split, n in stats.triplets.items()) + " triplets by split")
    st.caption(f"Runs trained on it: {runs:,} · embeddings: {widgets.md(embeddings_label(embeddings))}")
    links = st.columns(4)
    for col, (page, label) in zip(links, [("explore", "Explore its entities"),
                                          ("predict", "Predict links with a trained run"),
                                          ("neighbours", "Nearest neighbours by embedding")]):
        with col:
            widgets.page_link(page, label)
    with links[3]:
        widgets.page_link("runs", f"Its runs ({runs:,})", kg=stats.kg)


def main() -> None:
    st.title("Knowledge graphs")
    st.caption("The KGs loaded into Neo4j, with their training runs and embeddings. Pick one to explore, "
               "predict on, or search by embedding.")
    with widgets.user_errors():
        kgs = services.list_kgs()
        if not kgs:
            widgets.no_kgs_hint()
            return
        current = widgets.current_kg()
        run_counts = services.run_counts()
        embeddings = {kg: services.kg_embeddings(kg) for kg in kgs}
        st.dataframe(overview_rows([services.kg_stats(kg) for kg in kgs], run_counts, embeddings), hide_index=True,
                     column_config=OVERVIEW_COLUMNS)
        picked = kg_picker(kgs, current)
        st.subheader(widgets.md(picked))
        kg_details(services.kg_stats(picked), run_counts.get(picked, 0), embeddings[picked])


# Streamlit runs each page file as __main__; importing the module (kclip.ui.views...) renders nothing.
if __name__ == "__main__":
    main()

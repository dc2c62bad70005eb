"""Predict: ask a trained run for the missing part of a triplet in the current KG.

Three questions: (head, relation, ?) ranks tails, (?, relation, tail) ranks heads, and
(head, ?, tail) ranks relations. "known" marks answers that are already a triplet of the KG.
"""

from __future__ import annotations

from urllib.parse import urlencode

import streamlit as st

from kclip.ui import services, widgets
from kclip.ui.services import RunInfo

TAILS, HEADS, RELATIONS = "(head, relation, ?)", "(?, relation, tail)", "(head, ?, tail)"
QUESTIONS = {TAILS: "rank tails", HEADS: "rank heads", RELATIONS: "rank relations"}


def run_label(run: RunInfo) -> str:
    return f"{run.name}  ·  {run.status}, step {run.step:,}  ·  {run.created_at:%Y-%m-%d %H:%M}"


def pick_run(kg: str) -> RunInfo | None:
    runs = services.runs_for_kg(kg)
    if not runs:
        st.info(f"No runs for this KG yet. Train one with `kclip train --kg {kg} --config tiny`, "
                "then come back.", icon=widgets.ICON["predict"])
        return None
    return st.selectbox("Trained run", runs, key="predict_run", format_func=run_label,
                        help="Runs from the registry that were trained on this KG, newest first.")


def explore_url(kg: str, entity_id: str) -> str:
    # Relative to the current page's URL, so it also works under a server base path.
    return "./explore?" + urlencode({"kg": kg, "entity": entity_id})


def entity_table(kg: str, predictions: list) -> None:
    rows = [{"rank": i + 1, "entity": widgets.entity_label(p.entity, markdown=False), "score": round(p.score, 4),
             "known": "✓ in KG" if p.known else "", "open": explore_url(kg, p.entity.id)}
            for i, p in enumerate(predictions)]
    st.dataframe(rows, hide_index=True, column_config={
        "open": st.column_config.LinkColumn("open", display_text="explore ↗"),
        "score": st.column_config.NumberColumn("score", format="%.4f")})


def relation_table(predictions: list) -> None:
    rows = [{"rank": i + 1, "relation": p.relation.name, "text": p.relation.text, "score": round(p.score, 4),
             "known": "✓ in KG" if p.known else ""} for i, p in enumerate(predictions)]
    st.dataframe(rows, hide_index=True, column_config={"score": st.column_config.NumberColumn("score", format="%.4f")})


def ask(run: RunInfo, kg: str, question: str, k: int) -> None:
    """The inputs the question needs, then its answer once they are all given."""
    cols = st.columns(2)
    if question == TAILS:
        with cols[0]:
            head = widgets.entity_picker(kg, "Head entity", key="predict_head")
        with cols[1]:
            relation = widgets.relation_picker(kg, "Relation", key="predict_rel")
        if head and relation:
            entity_table(kg, services.predict_tails(run.name, kg, head.id, relation, k))
    elif question == HEADS:
        with cols[0]:
            relation = widgets.relation_picker(kg, "Relation", key="predict_rel")
        with cols[1]:
            tail = widgets.entity_picker(kg, "Tail entity", key="predict_tail")
        if tail and relation:
            entity_table(kg, services.predict_heads(run.name, kg, relation, tail.id, k))
    else:
        with cols[0]:
            head = widgets.entity_picker(kg, "Head entity", key="predict_head")
        with cols[1]:
            tail = widgets.entity_picker(kg, "Tail entity", key="predict_tail")
        if head and tail:
            relation_table(services.predict_relations(run.name, kg, head.id, tail.id, k))


def main() -> None:
    st.title("Predict")
    with widgets.user_errors():
        kg = widgets.current_kg()
        widgets.kg_caption(kg)
        run = pick_run(kg)
        if run is None:
            return
        question = st.radio("Question", list(QUESTIONS), key="predict_question", horizontal=True,
                            format_func=lambda q: f"{q} — {QUESTIONS[q]}")
        k = st.slider("How many answers", 1, 50, 10, key="predict_k")
        ask(run, kg, question, k)
        st.caption("Scores are the model's similarities; higher is more likely. "
                   "“✓ in KG” marks answers that already are a triplet of this KG (any split).")


# Streamlit runs each page file as __main__; importing the module (kclip.ui.views...) renders nothing.
if __name__ == "__main__":
    main()

"""Predict: ask a trained run for the missing part of a triplet in the current KG.

Three questions: (head, relation, ?) ranks tails, (?, relation, tail) ranks heads, and
(head, ?, tail) ranks relations. Head, relation and tail are one set of inputs that every question
shares (switching the question keeps them); they live in the URL too
(``?kg=KG&head=ID&relation=NAME&tail=ID``), so Explore's "Predict links" opens the page with its
entity as the head. Nothing is computed until Predict is pressed; the answer then stays, naming
the question it answers, until the next press. "known" marks answers already in the KG.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

import streamlit as st

from kclip.platform.errors import NotFoundError
from kclip.ui import services, widgets
from kclip.ui.services import EntityRow, RunInfo

TAILS, HEADS, RELATIONS = "(head, relation, ?)", "(?, relation, tail)", "(head, ?, tail)"
QUESTIONS = {TAILS: "rank tails", HEADS: "rank heads", RELATIONS: "rank relations"}
ASKED_SLOT = {TAILS: "tail", HEADS: "head", RELATIONS: "relation"}
SLOTS = ("head", "relation", "tail")
ASKED = "predict_asked"  # session state: the Question last asked with the Predict button
RELATION_BOX = "predict_rel"
SCALE_NOTE = (
    "Scores are cosine similarities, from −1 to 1, between the model's query for the missing part (the "
    "other two fused by its transformer) and each candidate's embedding: one scale for tails, heads and "
    "relations, whatever the number of candidates, and the measure the Neighbours page shows. Higher fits "
    "better; compare scores within an answer (a cosine is not a probability). “✓ in KG” marks answers "
    "that already are a triplet of this KG (any split)."
)


@dataclass(frozen=True)
class Question:
    run: str
    kg: str
    kind: str  # TAILS, HEADS or RELATIONS
    head: str | None
    relation: str | None
    tail: str | None
    k: int


def slot_state(slot: str) -> str:
    """Session-state key of an input (an entity id, or a relation name), shared by every question."""
    return f"predict_{slot}"


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


# -- inputs: one set, in session state and in the URL -------------------------------------------

def set_input(slot: str, value: str) -> None:
    st.session_state[slot_state(slot)] = value
    st.query_params[slot] = value


def drop_input(slot: str) -> None:
    st.session_state.pop(slot_state(slot), None)
    if slot in st.query_params:
        del st.query_params[slot]


def prefill_from_url() -> None:
    """A link's ?head= / ?relation= / ?tail= replace the inputs (the URL is what a link carries)."""
    for slot in SLOTS:
        value = st.query_params.get(slot)
        if value and value != st.session_state.get(slot_state(slot)):
            st.session_state[slot_state(slot)] = value
    for slot in SLOTS:  # and the URL always names the inputs, so a copied address asks the same
        if st.session_state.get(slot_state(slot)):
            st.query_params[slot] = st.session_state[slot_state(slot)]


def current_entity(kg: str, slot: str) -> EntityRow | None:
    entity_id = st.session_state.get(slot_state(slot))
    if not entity_id:
        return None
    try:
        return services.entity(kg, entity_id).entity
    except NotFoundError:  # another KG's entity, or gone since
        drop_input(slot)
        return None


def entity_input(kg: str, slot: str) -> None:
    """Search to change the entity; the chosen one is shown below the search, with its image."""
    picked = widgets.entity_picker(kg, slot.capitalize(), key=slot_state(slot))
    last = f"predict_{slot}_last_pick"
    # Take a pick only when it changed: a link's prefill must not be undone by a stale pick.
    if picked is not None and picked.id != st.session_state.get(last):
        st.session_state[last] = picked.id
        set_input(slot, picked.id)
    chosen = current_entity(kg, slot)
    if chosen is None:
        st.caption(f"No {slot} yet: search for one.")
        return
    image, label = st.columns([1, 4], vertical_alignment="center")
    with image:
        widgets.thumbnail(chosen, width=48)
    label.markdown(f"{slot}: {widgets.entity_label(chosen, max_chars=60)}")


def take_relation() -> None:
    if st.session_state[RELATION_BOX] is not None:
        set_input("relation", st.session_state[RELATION_BOX])


def relation_input(kg: str) -> None:
    names = [r.name for r in services.relations(kg)]
    if not names:
        st.caption("This KG has no relations.")
        return
    current = st.session_state.get(slot_state("relation"))
    if current is not None and current not in names:  # another KG's relation
        drop_input("relation")
        current = None
    # The shared input is the truth: the box shows it (also after a link or a question without
    # the box) and writes a pick back through its callback.
    st.session_state[RELATION_BOX] = current
    st.selectbox("Relation", names, key=RELATION_BOX, placeholder="pick a relation", on_change=take_relation)


def asked_slot(kind: str) -> None:
    st.markdown(f"**{ASKED_SLOT[kind]}: ?**")
    st.caption(f"The model ranks every {ASKED_SLOT[kind]} of this KG.")


def inputs(kg: str, kind: str) -> None:
    for slot, col in zip(SLOTS, st.columns(3, gap="medium")):
        with col:
            if slot == ASKED_SLOT[kind]:
                asked_slot(kind)
            elif slot == "relation":
                relation_input(kg)
            else:
                entity_input(kg, slot)


def question_from_inputs(run: RunInfo, kg: str, kind: str, k: int) -> Question:
    given = {slot: st.session_state.get(slot_state(slot)) for slot in SLOTS}
    given[ASKED_SLOT[kind]] = None
    return Question(run.name, kg, kind, given["head"], given["relation"], given["tail"], k)


def missing(question: Question) -> list[str]:
    return [slot for slot in SLOTS if slot != ASKED_SLOT[question.kind] and not getattr(question, slot)]


def predict_button(question: Question) -> None:
    lacking = missing(question)
    help_text = f"Give the {' and the '.join(lacking)} first." if lacking else "Rank the candidates for the “?”."
    if st.button("Predict", type="primary", key="predict_go", disabled=bool(lacking), help=help_text,
                 icon=widgets.ICON["predict"]):
        st.session_state[ASKED] = question


# -- the answer -----------------------------------------------------------------------------------

def explore_url(kg: str, entity_id: str) -> str:
    # Relative to the current page's URL, so it also works under a server base path.
    return "./explore?" + urlencode({"kg": kg, "entity": entity_id})


def score_column() -> st.column_config.NumberColumn:
    return st.column_config.NumberColumn("score", format="%.3f", help="cosine similarity, from −1 to 1")


def entity_table(kg: str, predictions: list) -> None:
    rows = [{"rank": i + 1, "image": services.thumbnail_url(p.entity),
             "entity": widgets.entity_label(p.entity, markdown=False), "score": round(p.score, 4),
             "known": "✓ in KG" if p.known else "", "open": explore_url(kg, p.entity.id)}
            for i, p in enumerate(predictions)]
    st.dataframe(rows, hide_index=True, row_height=56, column_config={
        "image": st.column_config.ImageColumn("image", width="small"),
        "open": st.column_config.LinkColumn("open", display_text="explore ↗"),
        "score": score_column()})


def relation_table(predictions: list) -> None:
    rows = [{"rank": i + 1, "relation": p.relation.name, "text": p.relation.text, "score": round(p.score, 4),
             "known": "✓ in KG" if p.known else ""} for i, p in enumerate(predictions)]
    st.dataframe(rows, hide_index=True, column_config={"score": score_column()})


def question_text(q: Question) -> str:
    def name(slot: str) -> str:
        value = getattr(q, slot)
        return "**?**" if value is None else widgets.md_code(value)
    return f"({name('head')}, {name('relation')}, {name('tail')})"


def answer(q: Question) -> None:
    st.markdown(f"#### Top {q.k} for {question_text(q)}")
    st.caption(f"Run {widgets.md_code(q.run)} · {QUESTIONS[q.kind]}")
    if q.kind == TAILS:
        entity_table(q.kg, services.predict_tails(q.run, q.kg, q.head, q.relation, q.k))
    elif q.kind == HEADS:
        entity_table(q.kg, services.predict_heads(q.run, q.kg, q.relation, q.tail, q.k))
    else:
        relation_table(services.predict_relations(q.run, q.kg, q.head, q.tail, q.k))
        return  # relations are scored against their texts, not the entities' embeddings
    source = services.candidate_source(q.run, q.kg)
    st.caption("Candidates' embeddings: " + ("read from Neo4j, where `kclip embed` of this run wrote them."
                                              if source == "neo4j" else
                                              "encoded by this run (the KG's stored embeddings are not this "
                                              "run's at this step, or there are none)."))


def main() -> None:
    st.title("Predict")
    with widgets.user_errors():
        kg = widgets.current_kg()
        widgets.kg_caption(kg)
        run = pick_run(kg)
        if run is None:
            return
        prefill_from_url()
        kind = st.radio("Question", list(QUESTIONS), key="predict_question", horizontal=True,
                        format_func=lambda q: f"{q} — {QUESTIONS[q]}")
        inputs(kg, kind)
        k = st.slider("How many answers", 1, 50, 10, key="predict_k")
        predict_button(question_from_inputs(run, kg, kind, k))
        asked = st.session_state.get(ASKED)
        if asked is not None and asked.kg == kg:
            answer(asked)
        st.caption(SCALE_NOTE)


# Streamlit runs each page file as __main__; importing the module (kclip.ui.views...) renders nothing.
if __name__ == "__main__":
    main()

"""Predict and Neighbours against the session's real Neo4j and a real (3-step) trained run.

Predict: nothing computed before the button; one set of inputs shared by the three questions;
prefilled from a link; one score scale; candidates read back from Neo4j when the run wrote them.
Neighbours: a modality filter inside the vector search; queries by free text and by image,
embedded by the run that embedded the KG; a warning when the space has collapsed.
Expected neighbours come from the test's own Cypher read of the stored vectors and numpy.
"""

from __future__ import annotations

import dataclasses
import re
from urllib.parse import parse_qs

import numpy as np
import pytest
from test_pages import open_page, texts

from kclip.models import inference
from kclip.models.inference import embed_texts, load_run
from kclip.models.predict import Predictor
from kclip.platform.errors import InputError
from kclip.ui import services

TOLERANCE = 5.1e-4  # candidates are scored exactly; the page shows three decimals


# -- helpers ----------------------------------------------------------------------------------------

def stored_vectors(graph_store, kg: str) -> dict[str, tuple[str, np.ndarray]]:
    """id -> (modality, vector) of every embedded entity, read by the test's own query."""
    rows = graph_store.run("MATCH (e:Entity {kg: $kg}) WHERE e.embedding IS NOT NULL "
                           "RETURN e.id AS id, e.modality AS modality, e.embedding AS v", kg=kg)
    return {r["id"]: (r["modality"], np.asarray(r["v"], dtype=np.float64)) for r in rows}


def brute_force(vectors: dict, query: np.ndarray, modality: str | None, exclude: str | None = None) -> list[float]:
    """Cosines of every wanted entity to ``query``, best first."""
    q = np.asarray(query, dtype=np.float64) / np.linalg.norm(query)
    return sorted((float(v @ q / np.linalg.norm(v)) for i, (m, v) in vectors.items()
                   if (modality is None or m == modality) and i != exclude), reverse=True)


def cards(at) -> list[tuple[str, str, float]]:
    """(modality, id, similarity) of each neighbour card, in page order."""
    icons = {":material/image:": "image", ":material/notes:": "text"}
    labels = [m.value for m in at.markdown if m.value.split(" ", 1)[0] in icons]
    scores = [float(c.value.split()[-1]) for c in at.caption if c.value.startswith("similarity ")]
    assert len(labels) == len(scores)
    return [(icons[label.split(" ", 1)[0]], re.findall(r"`([^`]+)`", label)[-1], score)
            for label, score in zip(labels, scores)]


def answer_rows(at) -> list[dict]:
    return at.dataframe[0].value.to_dict("records")


def row_id(row: dict) -> str:
    return row["entity"].rsplit("·  ", 1)[-1] if "·  " in row["entity"] else row["entity"].split(" ", 1)[1]


def pick_entity(at, slot: str, query: str, option_id: str) -> None:
    at.text_input(key=f"predict_{slot}_q").input(query).run()
    box = at.selectbox(key=f"predict_{slot}_pick")
    box.select_index(next(i for i, o in enumerate(box.options) if o.endswith(option_id))).run()


def relation_names(graph_store, kg: str) -> list[str]:
    return sorted(r.name for r in graph_store.relations(kg))


@pytest.fixture
def encoder_calls(monkeypatch) -> list[int]:
    """Counts batches of entities the model encodes (inference.embed_rows: what embed_kg calls)."""
    calls: list[int] = []
    real = inference.embed_rows

    def counting(run, rows):
        calls.append(len(rows))
        return real(run, rows)

    monkeypatch.setattr(inference, "embed_rows", counting)
    return calls


# -- Predict ----------------------------------------------------------------------------------------

def test_nothing_is_predicted_before_the_button(ui_env, ui_kg, trained_run, graph_store) -> None:
    kg = ui_kg[0]
    at = open_page("predict", kg=kg)
    assert at.button(key="predict_go").disabled  # no head, no relation yet
    pick_entity(at, "head", "circle", "name:circle")
    at.selectbox(key="predict_rel").select("is a").run()
    assert at.session_state["predict_head"] == "name:circle" and at.session_state["predict_relation"] == "is a"
    assert not at.dataframe and "Top " not in texts(at)
    assert not at.button(key="predict_go").disabled
    at.button(key="predict_go").click().run()
    rows = answer_rows(at)
    assert [r["rank"] for r in rows] == list(range(1, 11))
    assert "Top 10 for (`name:circle`, `is a`, **?**)" in texts(at)


def test_inputs_are_kept_across_question_types(ui_env, ui_kg, trained_run) -> None:
    at = open_page("predict", kg=ui_kg[0])
    pick_entity(at, "head", "circle", "name:circle")
    at.selectbox(key="predict_rel").select("is a").run()
    at.radio(key="predict_question").set_value("(?, relation, tail)").run()  # the head is asked now
    assert at.selectbox(key="predict_rel").value == "is a"
    pick_entity(at, "tail", "square", "name:square")
    at.radio(key="predict_question").set_value("(head, ?, tail)").run()  # the relation box goes away
    at.radio(key="predict_question").set_value("(head, relation, ?)").run()  # and comes back
    assert at.selectbox(key="predict_rel").value == "is a"
    state = {slot: at.session_state[f"predict_{slot}"] for slot in ("head", "relation", "tail")}
    assert state == {"head": "name:circle", "relation": "is a", "tail": "name:square"}
    assert at.query_params["head"] == "name:circle" and at.query_params["tail"] == "name:square"
    assert any(m.value.startswith("head: ") and "`name:circle`" in m.value for m in at.markdown)
    assert not at.button(key="predict_go").disabled


def test_explore_links_to_predict_with_the_entity_as_head(ui_env, ui_kg) -> None:
    at = open_page("explore", kg=ui_kg[0], entity="object:1")
    link = next(p for p in at.page_link if p.value == "Predict links")
    assert {k: v[-1] for k, v in parse_qs(link.proto.query_string).items()} == {"kg": ui_kg[0], "head": "object:1"}


def test_prefilled_from_the_url_marks_known_tails(ui_env, ui_kg, trained_run, graph_store) -> None:
    kg = ui_kg[0]
    at = open_page("predict", kg=kg, head="object:1", relation="is a")
    assert at.session_state["predict_head"] == "object:1"
    assert at.selectbox(key="predict_rel").value == "is a"
    at.slider(key="predict_k").set_value(50).run()
    at.button(key="predict_go").click().run()
    rows = answer_rows(at)
    assert len(rows) == 50
    known = {r["id"] for r in graph_store.run(
        "MATCH (h:Entity {kg: $kg, id: 'object:1'})-[t:TRIPLET]->(o) MATCH (r:Relation {kg: $kg, name: 'is a'}) "
        "WHERE t.rel = r.idx RETURN o.id AS id", kg=kg)}
    assert known  # the object is a shape
    assert {row_id(r) for r in rows if r["known"] == "✓ in KG"} == known & {row_id(r) for r in rows}
    images = [r for r in rows if r["entity"].startswith("🖼️")]
    assert images and all(r["image"].startswith("data:image/png;base64,") for r in images)
    assert not any(isinstance(r["image"], str) for r in rows if r["entity"].startswith("📝"))


def test_one_scale_for_tails_and_relations(ui_env, ui_kg, trained_run, graph_store) -> None:
    kg = ui_kg[0]
    at = open_page("predict", kg=kg, head="object:1", relation="is a", tail="name:circle")
    at.slider(key="predict_k").set_value(50).run()
    at.button(key="predict_go").click().run()
    tails = [r["score"] for r in answer_rows(at)]
    at.radio(key="predict_question").set_value("(head, ?, tail)").run()
    at.button(key="predict_go").click().run()
    relations = answer_rows(at)
    assert len(relations) == len(relation_names(graph_store, kg))
    scores = tails + [r["score"] for r in relations]
    assert all(-1.0 <= s <= 1.0 for s in scores), scores  # cosines; E2R logits would be ~14x larger
    assert "cosine similarities, from −1 to 1" in texts(at)


def test_cold_start_reads_the_runs_embeddings_from_neo4j(run_embedded_kg, trained_run, neo4j_settings,
                                                         graph_store, encoder_calls) -> None:
    kg = run_embedded_kg
    run = load_run(neo4j_settings, trained_run)
    predictor = Predictor(run, graph_store)
    assert predictor.wrote_embeddings(kg)
    stored = predictor.embeddings(kg)
    assert stored.source == "neo4j" and encoder_calls == []
    assert len(stored.idx) == graph_store.stats(kg).total_entities
    from_neo4j = predictor.tails(kg, "object:1", "is a", k=10)
    assert encoder_calls == []
    # The same question with every entity encoded again: the same answer.
    encoding = Predictor(run, graph_store)
    encoding._embeddings[kg] = inference.embed_kg(run, graph_store, kg, progress=False)
    assert sum(encoder_calls) == len(stored.idx)
    encoded = encoding.tails(kg, "object:1", "is a", k=10)
    assert [p.entity.id for p in from_neo4j] == [p.entity.id for p in encoded]
    assert np.allclose([p.score for p in from_neo4j], [p.score for p in encoded], atol=1e-5)
    # Another step of the run did not write them: that predictor encodes for itself.
    later = Predictor(dataclasses.replace(run, step=run.step + 1), graph_store)
    assert not later.wrote_embeddings(kg) and later.embeddings(kg).source == "encoded"


def test_the_page_says_where_candidates_came_from(ui_env, run_embedded_kg, trained_run, encoder_calls) -> None:
    services._predictor.clear()  # a fresh predictor, as after a restart
    at = open_page("predict", kg=run_embedded_kg, head="object:1", relation="is a")
    at.button(key="predict_go").click().run()
    assert len(answer_rows(at)) == 10
    assert "read from Neo4j, where `kclip embed` of this run wrote them" in texts(at)
    assert encoder_calls == []


# -- Neighbours -------------------------------------------------------------------------------------

@pytest.mark.parametrize("centre, show, modality", [("name:circle", "images", "image"), ("image:1", "texts", "text")])
def test_modality_filter_inside_the_vector_search(ui_env, run_embedded_kg, graph_store, centre, show,
                                                  modality) -> None:
    at = open_page("neighbours", kg=run_embedded_kg, entity=centre)
    at.radio(key="neighbours_show").set_value(show).run()
    found = cards(at)
    assert len(found) == 10 and {m for m, _, _ in found} == {modality}
    vectors = stored_vectors(graph_store, run_embedded_kg)
    expected = brute_force(vectors, vectors[centre][1], modality, exclude=centre)[:10]
    assert np.allclose([s for _, _, s in found], expected, atol=TOLERANCE)
    assert centre not in {i for _, i, _ in found}
    assert "### Nearest to the entity" in texts(at)


def test_free_text_is_embedded_by_the_run_that_embedded_the_kg(ui_env, run_embedded_kg, trained_run,
                                                               neo4j_settings, graph_store) -> None:
    at = open_page("neighbours", kg=run_embedded_kg)
    at.radio(key="neighbours_mode").set_value("free text").run()
    at.radio(key="neighbours_show").set_value("images").run()
    at.text_input(key="neighbours_text").input("a red circle").run()
    shown = texts(at)
    assert "### Nearest to the text “a red circle”" in shown
    assert f"Embedded by run `{trained_run}` at step 3" in shown
    found = cards(at)
    assert len(found) == 10 and {m for m, _, _ in found} == {"image"}
    query = embed_texts(load_run(neo4j_settings, trained_run), ["a red circle"])[0].numpy()
    expected = brute_force(stored_vectors(graph_store, run_embedded_kg), query, "image")[:10]
    assert np.allclose([s for _, _, s in found], expected, atol=TOLERANCE)


def test_free_text_needs_a_recorded_run(ui_env, embedded_kg) -> None:
    at = open_page("neighbours", kg=embedded_kg)
    at.radio(key="neighbours_mode").set_value("free text").run()
    at.text_input(key="neighbours_text").input("circle").run()
    assert "has no record of the run that embedded it" in "\n".join(i.value for i in at.info)
    assert cards(at) == []  # and no keyword matches instead


def test_an_image_finds_its_own_entity_first(ui_env, run_embedded_kg, graph_store) -> None:
    key = graph_store.run("MATCH (e:Entity {kg: $kg, id: 'image:1'}) RETURN e.image AS key", kg=run_embedded_kg)[0]["key"]
    data = services.image_path(key).read_bytes()  # the very file the KG's entity shows
    found = services.nearest_to_image(run_embedded_kg, data, k=5, modality="image")
    assert len(found) == 5 and found[0][0].id == "image:1" and found[0][1] > 0.999
    with pytest.raises(InputError, match="not an image"):
        services.nearest_to_image(run_embedded_kg, b"not an image", k=5)


def test_collapsed_embeddings_are_flagged(ui_env, collapsed_kg, embedded_kg) -> None:
    at = open_page("neighbours", kg=collapsed_kg, entity="object:1")
    assert {round(s, 3) for _, _, s in cards(at)} == {1.0}
    assert "looks collapsed" in at.warning[0].value and "1.000" in at.warning[0].value
    healthy = open_page("neighbours", kg=embedded_kg, entity="object:1")  # random vectors: spread out
    assert len(cards(healthy)) == 10 and not healthy.warning

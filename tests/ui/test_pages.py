"""Every page of the explorer, run in-process by Streamlit's AppTest against the session's real Neo4j."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import kclip.ui
from kclip.ui.widgets import md

APP = Path(kclip.ui.__file__).parent / "app.py"
PAGES = ["knowledge_graphs", "explore", "predict", "neighbours", "runs"]


def open_page(page: str, **query: str) -> AppTest:
    """The app on ``page`` with the URL's query parameters ``query``, after one full run."""
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.query_params.update(query)
    at.run()
    if page != "knowledge_graphs":  # the default page
        at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    """Every bit of text on the page, to look for words in."""
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [h.value for h in at.subheader]
    parts += [e.value for kind in (at.info, at.error, at.warning) for e in kind]
    return "\n".join(str(p) for p in parts)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_opens(page: str, ui_env, ui_kg) -> None:
    at = open_page(page, kg=ui_kg[0])
    assert not at.error, [e.value for e in at.error]
    assert at.title[0].value.lower().startswith(page.split("_")[0])


def test_kg_page_lists_the_kg_with_its_counts(ui_env, ui_kg, graph_store) -> None:
    kg, summary = ui_kg
    at = open_page("knowledge_graphs", kg=kg)
    table = at.dataframe[0].value.set_index("KG")
    row = table.loc[kg]
    stats = graph_store.stats(kg)
    assert row["image entities"] == summary.images + summary.objects  # every image and every object crop
    assert row["text entities"] == stats.entities["text"] > 0
    assert row["relations"] == stats.relations > 0
    assert {s: row[f"{s} triplets"] for s in ("train", "dev", "test")} == stats.triplets
    assert row["all triplets"] == stats.total_triplets > 0
    assert at.selectbox(key="kg_picker").value == kg
    assert at.session_state["kg"] == kg


def test_kg_picker_sets_the_current_kg(ui_env, ui_kg, embedded_kg) -> None:
    at = open_page("knowledge_graphs", kg=ui_kg[0])
    at.selectbox(key="kg_picker").select(embedded_kg).run()
    assert at.session_state["kg"] == embedded_kg
    assert at.query_params["kg"] == embedded_kg
    at.switch_page("views/explore.py").run()  # the other pages follow the pick
    assert f"**{md(embedded_kg)}**" in texts(at)


def test_explore_finds_an_entity_and_shows_its_triplets(ui_env, ui_kg) -> None:
    at = open_page("explore", kg=ui_kg[0])
    at.text_input(key="explore_q").input("circle").run()
    hit = next(b for b in at.button if b.key.startswith("hit-") and "`name:circle`" in b.label)
    hit.click().run()
    assert at.query_params["entity"] == "name:circle"
    shown = texts(at)
    assert "Triplets (" in shown
    assert "← is a —" in shown  # objects that are circles point at the name
    neighbours = [b for b in at.button if b.key.startswith("edge-")]
    assert neighbours and all("circle" in b.label for b in neighbours)
    # A neighbour is a link: clicking it opens that entity.
    neighbours[0].click().run()
    assert at.query_params["entity"].startswith("object:")
    assert "— is a →" in texts(at)


def test_explore_opens_the_entity_named_in_the_url(ui_env, ui_kg) -> None:
    at = open_page("explore", kg=ui_kg[0], entity="image:1")
    shown = texts(at)
    assert "image:1" in shown and "← in image —" in shown
    assert at.get("image"), "an image entity shows its image"


def test_explore_says_when_the_url_names_no_entity(ui_env, ui_kg) -> None:
    at = open_page("explore", kg=ui_kg[0], entity="no-such-entity")
    assert "has no entity" in texts(at)
    assert not at.error


def test_neighbours_hint_without_an_index(ui_env, ui_kg) -> None:
    at = open_page("neighbours", kg=ui_kg[0], entity="object:1")
    hint = "\n".join(i.value for i in at.info)
    assert "`kclip embed --run " in hint and f" --kg {ui_kg[0]}`" in hint


def test_neighbours_by_embedding(ui_env, embedded_kg) -> None:
    at = open_page("neighbours", kg=embedded_kg, entity="object:1")
    scores = [c.value for c in at.caption if c.value.startswith("similarity ")]
    assert len(scores) == 10
    values = [float(s.split()[-1]) for s in scores]
    assert values == sorted(values, reverse=True)
    at.button(key="centre-0").click().run()  # re-centre on the nearest neighbour
    assert at.query_params["entity"] != "object:1"


def test_predict_without_runs(ui_env, embedded_kg) -> None:
    at = open_page("predict", kg=embedded_kg)
    assert "No runs for this KG" in "\n".join(i.value for i in at.info)


def test_unknown_kg_in_the_url_is_said(ui_env, ui_kg) -> None:
    at = open_page("knowledge_graphs", kg="no-such-kg")
    assert "no KG named `no-such-kg`" in at.warning[0].value
    assert at.query_params["kg"] != "no-such-kg"


def test_neo4j_down_is_an_error_message_not_a_traceback(ui_env, monkeypatch) -> None:
    monkeypatch.setenv("KCLIP_NEO4J_URI", "bolt://127.0.0.1:9")  # nothing listens on the discard port
    at = open_page("knowledge_graphs")
    assert "not answering" in at.error[0].value


def test_predict_with_a_trained_run(ui_env, ui_kg, trained_run) -> None:
    at = open_page("predict", kg=ui_kg[0])
    assert at.selectbox(key="predict_run").value.name == trained_run
    # (head, relation, ?): a head found by search, the first relation, ten ranked tails.
    at.text_input(key="predict_head_q").input("circle").run()
    at.selectbox(key="predict_rel").select_index(0).run()
    at.button(key="predict_go").click().run()  # nothing is predicted before the button
    tails = at.dataframe[0].value
    assert len(tails) == 10 and list(tails["rank"]) == list(range(1, 11))
    assert list(tails["score"]) == sorted(tails["score"], reverse=True)
    # (head, ?, tail) for an object that is a circle: every relation ranked, "is a" marked known.
    at.radio(key="predict_question").set_value("(head, ?, tail)")
    at.slider(key="predict_k").set_value(50).run()
    head = at.selectbox(key="predict_head_pick")
    head.select_index(next(i for i, o in enumerate(head.options) if "·  object:" in o)).run()
    at.text_input(key="predict_tail_q").input("circle").run()
    tail = at.selectbox(key="predict_tail_pick")
    tail.select_index(tail.options.index("📝 circle  ·  name:circle")).run()
    at.button(key="predict_go").click().run()
    assert not at.exception, [e.message for e in at.exception]
    table = at.dataframe[0].value.set_index("relation")
    assert table.loc["is a", "known"] == "✓ in KG"
    assert (table["known"] == "✓ in KG").sum() == 1


def test_entity_labels_show_user_text_literally() -> None:
    from kclip.ui.services import EntityRow
    from kclip.ui.widgets import entity_label

    row = EntityRow(0, "attribute:small", "text", "*bold* [link](x) :small[y]", None)
    label = entity_label(row)
    assert label == r":material/notes: \*bold\* \[link\]\(x\) \:small\[y\] · `attribute:small`"
    assert entity_label(row, markdown=False) == "📝 *bold* [link](x) :small[y]  ·  attribute:small"
    assert entity_label(EntityRow(1, "image:1", "image", None, "k.png")) == ":material/image: `image:1`"


# -- Explore's search panel and the entity pickers (issue 9): every match, paged, as you type -------

def search_hits(at: AppTest) -> list[str]:
    """The ids on the search panel's current page, in order (each hit's label ends with its id)."""
    import re

    return [re.findall(r"`([^`]+)`", b.label)[-1] for b in at.button if b.key and b.key.startswith("hit-")]


def test_explore_search_pages_through_every_match(ui_env, ui_kg, graph_store) -> None:
    kg = ui_kg[0]
    objects = {r["id"] for r in graph_store.run(  # "object" is a word of every object's id (object:N)
        "MATCH (e:Entity {kg: $kg}) WHERE e.id STARTS WITH 'object:' OR e.text =~ '(?is).*\\\\bobject.*' "
        "RETURN e.id AS id", kg=kg)}
    assert len(objects) > 25
    at = open_page("explore", kg=kg)
    at.text_input(key="explore_q").input("object").run()
    first = search_hits(at)
    assert len(first) == 25
    assert f"1–25 of **{len(objects)}** matches for “object”" in texts(at)
    assert at.button(key="explore_search_prev").disabled and not at.button(key="explore_search_next").disabled
    at.button(key="explore_search_next").click().run()
    second = search_hits(at)
    assert f"26–{len(objects)} of **{len(objects)}** matches" in texts(at)
    assert len(first) + len(second) == len(set(first + second)) and set(first + second) == objects
    assert at.button(key="explore_search_next").disabled
    at.button(key="explore_search_prev").click().run()
    assert search_hits(at) == first
    at.button(key="explore_search_next").click().run()
    at.text_input(key="explore_q").input("object circle").run()  # a new search starts at its first page
    assert search_hits(at) and "1–" in texts(at)


def test_explore_search_matches_the_start_of_a_word_and_ids(ui_env, ui_kg) -> None:
    at = open_page("explore", kg=ui_kg[0])
    at.text_input(key="explore_q").input("circ").run()
    assert "name:circle" in search_hits(at)
    at.text_input(key="explore_q").input("image:1").run()  # image entities have no text: found by id
    assert search_hits(at)[0] == "image:1"
    at.text_input(key="explore_q").input("image").run()
    hits = search_hits(at)
    assert hits and all(h.startswith("image:") for h in hits)
    assert len(at.get("image")) == len(hits), "each image entity's row shows its image"
    next(b for b in at.button if b.key == "hit-0").click().run()
    assert at.query_params["entity"] == hits[0]


def test_explore_search_of_2000_words_is_cut_with_a_note(ui_env, ui_kg) -> None:
    at = open_page("explore", kg=ui_kg[0])
    at.text_input(key="explore_q").input(" ".join(["circle"] * 2000)).run()
    assert not at.exception and not at.error
    assert "searched the first 64 of 2,000 words" in texts(at)
    assert "name:circle" in search_hits(at)


def test_entity_pickers_match_the_start_of_a_word(ui_env, ui_kg) -> None:
    at = open_page("neighbours", kg=ui_kg[0])
    at.text_input(key="neighbours_q").input("circ").run()
    assert "📝 circle  ·  name:circle" in at.selectbox(key="neighbours_pick").options

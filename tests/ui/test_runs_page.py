"""The Runs page and the home page's runs and embeddings, in-process (AppTest) against real runs:
``trained_run`` and ``second_run`` (tests/ui/conftest.py), a real evaluation and a real ``compare``.

Every value on the page is checked against the registry (or Neo4j) read independently.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

import kclip.ui
from kclip.platform.registry import COMPARISON_HEADLINE, Registry
from kclip.ui.services import RunSummary
from kclip.ui.views import runs as runs_page

APP = Path(kclip.ui.__file__).parent / "app.py"


def open_page(page: str, **query: str) -> AppTest:
    """``page`` opened straight from a URL with ``query``, after one full run."""
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.query_params.update(query)
    # Straight to the page: through the home page first, its current-KG ?kg= would filter the runs.
    at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def charts(at: AppTest) -> dict[str, pd.DataFrame]:
    """Every vega-lite chart on the page by its title (untitled: ""), with the data it plots."""
    found = {}
    for chart in at.get("vega_lite_chart"):
        spec = json.loads(chart.proto.spec)
        found[spec.get("title", "")] = pa.ipc.open_stream(chart.proto.data.data).read_pandas()
    return found


def chart_title(metric: str) -> str:
    return runs_page.CHART_LABELS.get(metric, metric.removeprefix(runs_page.LOSS_PREFIX))


def table_with(at: AppTest, *columns: str) -> pd.DataFrame:
    """The one table on the page that has all of ``columns``."""
    tables = [d.value for d in at.dataframe if set(columns) <= set(d.value.columns)]
    assert len(tables) == 1, f"{len(tables)} tables with columns {columns}"
    return tables[0]


@pytest.fixture
def registry(ui_env) -> Registry:
    return Registry(ui_env["KCLIP_REGISTRY_URL"])


def test_table_lists_every_run_and_filters_by_kg(ui_env, registry, ui_kg, runs_kg, embedded_kg, trained_run,
                                                 second_run) -> None:
    at = open_page("runs")
    table = at.dataframe[0].value.set_index("run")
    assert {trained_run, second_run} <= set(table.index)
    assert list(table.index) == [r.name for r in registry.list_runs()]  # every run, newest first
    for name, kg, planned in ((trained_run, ui_kg[0], 3), (second_run, runs_kg, 4)):
        run = registry.get_run(name)
        row = table.loc[name]
        assert (row["status"], row["KG"], row["config"]) == ("finished", kg, "tiny")
        assert row["steps"] == f"{run.step} / {planned}" and run.step == planned

    at.selectbox(key=runs_page.KG_FILTER).select(runs_kg).run()
    assert at.query_params["kg"] == runs_kg
    listed = at.dataframe[0].value
    assert "parent" not in listed.columns  # no run on this KG started from another
    assert set(listed["KG"]) == {runs_kg} and second_run in set(listed["run"]) and trained_run not in set(listed["run"])
    at = open_page("runs", kg=embedded_kg)  # a KG nothing trained on, as the home page links to it
    assert not at.dataframe and f"No runs on KG `{embedded_kg}`" in at.info[0].value
    at = open_page("runs", run="no-such-run")
    assert "No run named `no-such-run`" in at.warning[0].value and at.multiselect(key=runs_page.PICK).value == []


def test_one_run_shows_the_registry_curves_and_config(ui_env, registry, second_run) -> None:
    at = open_page("runs", run=second_run)
    assert at.multiselect(key=runs_page.PICK).value == [second_run]
    # Titled charts: the comparisons section (any KG's, recorded by other tests) draws an untitled one.
    shown = {title: chart for title, chart in charts(at).items() if title}
    logged = sorted({name for _, name, _ in registry.metrics(second_run)})
    assert {"train/loss", "lr"} < set(logged)
    assert set(shown) == {chart_title(m) for m in logged}  # a chart per loss term, lr and speed
    for metric in logged:
        points = shown[chart_title(metric)]
        assert set(points["run"]) == {second_run}
        recorded = [(step, value) for step, _, value in registry.metrics(second_run, metric)]
        assert list(zip(points["step"], points["value"])) == recorded
    assert sorted(shown[chart_title("train/loss")]["step"]) == [1, 2, 3, 4]  # log_every 1
    assert json.loads(at.json[0].value) == registry.get_run(second_run).config


def test_two_runs_overlay_curves_and_diff_exactly_the_differing_keys(ui_env, registry, trained_run, second_run) -> None:
    at = open_page("runs", runs=f"{trained_run},{second_run}")
    assert at.multiselect(key=runs_page.PICK).value == [trained_run, second_run]
    loss = charts(at)[chart_title("train/loss")]
    for name in (trained_run, second_run):
        expected = [(s, v) for s, _, v in registry.metrics(name, "train/loss")]
        assert list(zip(*(loss[loss["run"] == name][c] for c in ("step", "value")))) == expected

    diff = table_with(at, "key", trained_run, second_run).set_index("key")
    assert set(diff.index) == {"max_steps", "log_every", "optim.lr", "data.batch_size"}  # conftest's second_run
    configs = {name: runs_page.flatten(registry.get_run(name).config) for name in (trained_run, second_run)}
    for key in diff.index:
        assert [json.loads(diff.loc[key, name]) for name in configs] == [configs[name][key] for name in configs]
    assert diff.loc["max_steps", second_run] == "4" and diff.loc["max_steps", trained_run] == "3"

    # The multiselect writes the pick back to the URL.
    at.multiselect(key=runs_page.PICK).unselect(trained_run).run()
    assert at.query_params.get("run") == second_run and "runs" not in at.query_params


def test_evaluation_tables_appear_after_an_eval(ui_env, registry, neo4j_settings, trained_run, second_run) -> None:
    from kclip.models.evaluate import evaluate_and_record

    at = open_page("runs", run=second_run)
    assert any(c.value.startswith("Not evaluated yet") for c in at.caption)
    metrics = evaluate_and_record(neo4j_settings, second_run, split="test", max_triplets=20, progress=False)
    st.cache_data.clear()  # as the RUNS_TTL would, a few seconds later

    at = open_page("runs", run=second_run)
    table = table_with(at, "task", "metric", "value")
    recorded = registry.evaluations(second_run)[-1]
    assert (recorded.split, recorded.step) == ("test", 4)
    assert dict(zip(table["metric"], table["value"])) == recorded.metrics == pytest.approx(metrics)
    assert set(table["task"]) >= {"link prediction", "relation prediction"}
    assert table.loc[table["metric"] == "relation_mrr", "task"].item() == "relation prediction"

    at = open_page("runs", runs=f"{trained_run},{second_run}")
    side = table_with(at, "task", "metric", second_run).set_index("metric")
    assert side[second_run].to_dict() == recorded.metrics


@pytest.fixture(scope="module")
def comparison(runs_kg, neo4j_settings):
    """A real `kclip compare` of two variants: Knowledge-CLIP trained, and no-kd (the same thing from random init)."""
    from kclip.models.compare import compare
    from kclip.models.train_config import load_train_config

    config = load_train_config("tiny", {"max_steps": 2, "data.num_workers": 0, "data.batch_size": 8})
    return compare(neo4j_settings, runs_kg, config, "ui-cmp", ["knowledge-clip", "no-kd"], max_triplets=20,
                   progress=False)


def test_compare_results_are_recorded_and_shown(ui_env, registry, runs_kg, comparison) -> None:
    stored = registry.comparisons(runs_kg)[0]
    assert (stored.name, stored.kg, stored.split) == ("ui-cmp", runs_kg, "test")
    assert [(r["variant"], r["run"], r["metrics"], r["note"]) for r in stored.results] == \
        [(r.variant, r.run, r.metrics, r.note) for r in comparison]
    trained = comparison[0]
    assert trained.run == "ui-cmp-knowledge-clip-s0" and trained.metrics and not comparison[1].metrics

    at = open_page("runs", kg=runs_kg)
    table = table_with(at, "variant", "run", "note").set_index("variant")
    assert list(table.index) == ["knowledge-clip", "no-kd"]
    assert table.loc["knowledge-clip", "run"] == trained.run
    for metric in COMPARISON_HEADLINE:
        if metric in trained.metrics:
            assert table.loc["knowledge-clip", metric] == pytest.approx(trained.metrics[metric])
    assert "same as knowledge-clip" in table.loc["no-kd", "note"]
    bars = charts(at)[""]
    assert sorted(zip(bars["metric"], bars["value"])) == \
        sorted((m, trained.metrics[m]) for m in COMPARISON_HEADLINE if m in trained.metrics)


def test_home_page_shows_runs_and_embeddings_per_kg(ui_env, registry, graph_store, embedded_kg, runs_kg,
                                                    trained_run, second_run, run_embedded_kg) -> None:
    at = open_page("knowledge_graphs", kg=run_embedded_kg)
    table = at.dataframe[0].value.set_index("KG")
    counts = {kg: sum(r.kg == kg for r in registry.list_runs()) for kg in table.index}
    assert table["runs"].to_dict() == counts and counts[runs_kg] >= 1 and counts[embedded_kg] == 0
    assert table.loc[run_embedded_kg, "runs page"] == f"./runs?kg={run_embedded_kg}"

    # Embeddings, against Neo4j's own vector-index listing.
    index = graph_store.run("SHOW VECTOR INDEXES YIELD name, options WHERE name = $name RETURN options",
                            name=f"entity_embedding_{run_embedded_kg}")
    dimensions = index[0]["options"]["indexConfig"]["vector.dimensions"]
    step = registry.get_run(trained_run).step
    assert table.loc[run_embedded_kg, "embeddings"] == f"{dimensions}-d, run {trained_run} (step {step})"
    assert table.loc[embedded_kg, "embeddings"] == "8-d (run not recorded)"  # the fixture wrote vectors by hand
    assert f"Runs trained on it: {counts[run_embedded_kg]}" in "\n".join(c.value for c in at.caption)


def test_parent_column_only_when_a_run_has_one() -> None:
    started = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    fresh = RunSummary("a", "kg", "finished", "tiny", 10, 10, started, started + dt.timedelta(seconds=75), None, {})
    child = RunSummary("b", "kg", "running", None, 3, None, started, started + dt.timedelta(hours=2, minutes=5), "a", {})
    assert [list(r) for r in runs_page.run_rows([fresh])] == \
        [["run", "status", "KG", "config", "steps", "started (UTC)", "duration"]]
    rows = runs_page.run_rows([fresh, child])
    assert [(r["parent"], r["steps"], r["config"], r["duration"]) for r in rows] == \
        [("", "10 / 10", "tiny", "1 min 15 s"), ("a", "3", "—", "2 h 05 min")]

"""Runs: the registry's training runs, their loss curves and evaluations, and runs side by side.

One run picked: its loss curves per term, learning rate and speed, evaluations and config. Two or
more: one chart per loss term with a line per run, their latest evaluations side by side, and
the config keys where they differ. Below, the recorded ``kclip compare`` results. The URL names
the picked runs (``?run=NAME`` or ``?runs=A,B``) and the KG filter (``?kg=``), so a link
reopens a comparison.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import streamlit as st

from kclip.ui import services, widgets
from kclip.platform.registry import COMPARISON_HEADLINE
from kclip.ui.services import ComparisonRecord, EvaluationRecord, RunSummary
from kclip.ui.widgets import md, md_code

KG_FILTER, PICK, COMPARISON = "runs_kg", "runs_pick", "runs_comparison"
ALL_KGS = "all KGs"
LOSS_PREFIX = "train/"  # the trainer logs each loss term as train/<term>, their weighted sum as train/loss
CHART_LABELS = {"train/loss": "loss (weighted sum)", "lr": "learning rate", "steps_per_s": "steps / s",
                "samples_per_s": "samples / s"}
# Metric-name prefix -> task, in the order tables list them; everything else is link prediction.
TASKS = (("relation_", "relation prediction"), ("i2t_", "image-text retrieval"), ("t2i_", "image-text retrieval"),
         ("swap_", "relation swap"), ("aro/", "ARO"), ("retrieval/", "retrieval (file)"))
TASK_ORDER = ("link prediction", "relation prediction", "image-text retrieval", "relation swap", "ARO",
              "retrieval (file)")
ABSENT = "(absent)"
VALUE_FORMAT = {"value": st.column_config.NumberColumn("value", format="%.4f")}


# -- what the page shows, as plain rows (tested without Streamlit) -----------------------------

def steps_label(run: RunSummary) -> str:
    return f"{run.step:,} / {run.max_steps:,}" if run.max_steps else f"{run.step:,}"


def duration_label(duration: dt.timedelta) -> str:
    seconds = max(0, round(duration.total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def run_rows(runs: list[RunSummary]) -> list[dict[str, str]]:
    """The runs table; a "parent" column only when some run records the run it started from."""
    with_parent = any(r.parent for r in runs)
    rows = []
    for r in runs:
        row = {"run": r.name, "status": r.status, "KG": r.kg, "config": r.config_name or "—",
               "steps": steps_label(r), "started (UTC)": f"{r.started:%Y-%m-%d %H:%M}",
               "duration": duration_label(r.duration)}
        if with_parent:
            row["parent"] = r.parent or ""
        rows.append(row)
    return rows


def curve_data(points_by_run: dict[str, list[tuple[int, str, float]]]) -> dict[str, list[dict[str, Any]]]:
    """Each logged metric's points, ``{metric: [{run, step, value}]}``: the data of one chart."""
    charts: dict[str, list[dict[str, Any]]] = {}
    for run, points in points_by_run.items():
        for step, metric, value in points:
            charts.setdefault(metric, []).append({"run": run, "step": step, "value": value})
    return charts


def loss_terms(metrics: list[str]) -> list[str]:
    """The loss metrics, their weighted sum first, then each term by name."""
    losses = [m for m in metrics if m.startswith(LOSS_PREFIX)]
    return sorted(losses, key=lambda m: (m != f"{LOSS_PREFIX}loss", m))


def line_spec(title: str) -> dict[str, Any]:
    """A vega-lite line chart of ``value`` by ``step``, one line per ``run``."""
    return {
        "title": title,
        "mark": {"type": "line", "point": True, "tooltip": True},
        "encoding": {
            "x": {"field": "step", "type": "quantitative", "title": "step", "axis": {"format": "d", "tickMinStep": 1}},
            "y": {"field": "value", "type": "quantitative", "title": None, "scale": {"zero": False}},
            "color": {"field": "run", "type": "nominal", "title": None, "scale": {"scheme": "tableau10"},
                      "legend": {"orient": "bottom", "direction": "vertical", "labelLimit": 400}},
        },
    }


def metric_task(metric: str) -> str:
    return next((task for prefix, task in TASKS if metric.startswith(prefix)), "link prediction")


def _metric_order(metric: str) -> tuple[int, str]:
    return TASK_ORDER.index(metric_task(metric)), metric


def evaluation_rows(metrics: dict[str, float]) -> list[dict[str, Any]]:
    """One evaluation as a table: task, metric, value."""
    return [{"task": metric_task(m), "metric": m, "value": metrics[m]} for m in sorted(metrics, key=_metric_order)]


def side_by_side_rows(metrics_by_column: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """Rows of (task, metric), one column per key of ``metrics_by_column`` (a run or a variant)."""
    names = sorted(set().union(*metrics_by_column.values()), key=_metric_order)
    return [{"task": metric_task(m), "metric": m, **{col: ms.get(m) for col, ms in metrics_by_column.items()}}
            for m in names]


def latest_evaluations(by_run: dict[str, list[EvaluationRecord]]) -> dict[tuple[str, str], dict[str, EvaluationRecord]]:
    """Each run's newest evaluation per (KG, split); ``by_run`` lists each run's newest first."""
    latest: dict[tuple[str, str], dict[str, EvaluationRecord]] = {}
    for run, evaluations in by_run.items():
        for e in evaluations:
            latest.setdefault((e.kg, e.split), {}).setdefault(run, e)
    return latest


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as dotted keys: ``{"optim": {"lr": 1}}`` -> ``{"optim.lr": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_diff(configs: dict[str, dict[str, Any]]) -> list[dict[str, str]]:
    """The dotted config keys whose values differ between runs, each run's value as JSON."""
    flat = {run: flatten(config) for run, config in configs.items()}
    rows = []
    for key in sorted(set().union(*flat.values())):
        values = {run: json.dumps(f[key]) if key in f else ABSENT for run, f in flat.items()}
        if len(set(values.values())) > 1:
            rows.append({"key": key, **values})
    return rows


def comparison_rows(comparison: ComparisonRecord) -> list[dict[str, Any]]:
    """The table ``kclip compare`` printed: each variant's (first) run, headline metrics (means over
    its seeds; None: n/a) and note."""
    shown = [m for m in COMPARISON_HEADLINE if any(m in v.metrics for v in comparison.variants)]
    return [{"variant": v.variant, "run": v.run, **{m: v.metrics.get(m) for m in shown}, "note": v.note}
            for v in comparison.variants]


def comparison_bars(comparison: ComparisonRecord) -> list[dict[str, Any]]:
    return [{"metric": m, "variant": v.variant, "value": v.metrics[m]}
            for m in COMPARISON_HEADLINE for v in comparison.variants if v.metrics.get(m) is not None]


def bar_spec(metrics: list[str]) -> dict[str, Any]:
    """Grouped bars: a group per metric, a bar per variant."""
    return {
        "mark": {"type": "bar", "tooltip": True},
        "encoding": {
            "x": {"field": "metric", "type": "nominal", "sort": metrics, "title": None, "axis": {"labelAngle": 0}},
            "xOffset": {"field": "variant", "type": "nominal"},
            "y": {"field": "value", "type": "quantitative", "title": None},
            "color": {"field": "variant", "type": "nominal", "title": "variant", "scale": {"scheme": "tableau10"}},
        },
    }


# -- the URL: ?kg= filters, ?run= / ?runs= picks ------------------------------------------------

def runs_in_url(known: set[str]) -> list[str]:
    """The runs the URL names, in order; a warning for names the registry does not know."""
    named = st.query_params.get_all("run") + [n for v in st.query_params.get_all("runs") for n in v.split(",") if n]
    unknown = [n for n in named if n not in known]
    if unknown:
        st.warning(f"No run named {', '.join(md_code(n) for n in unknown)} in the registry.", icon=":material/warning:")
    return list(dict.fromkeys(n for n in named if n in known))


def put_runs_in_url(names: list[str]) -> None:
    for param in ("run", "runs"):
        st.query_params.pop(param, None)
    if len(names) == 1:
        st.query_params["run"] = names[0]
    elif names:
        st.query_params["runs"] = ",".join(names)  # run names hold no commas (registry.RUN_NAME)


def _runs_picked() -> None:
    put_runs_in_url(st.session_state[PICK])


def _kg_filtered() -> None:
    kg = st.session_state[KG_FILTER]
    if kg == ALL_KGS:
        st.query_params.pop("kg", None)
    else:
        st.query_params["kg"] = kg


# -- the page ----------------------------------------------------------------------------------

def kg_filter(runs: list[RunSummary]) -> str | None:
    """The KG whose runs the page lists (None: all); a KG without runs may still be asked for."""
    wanted = st.query_params.get("kg")
    kgs = sorted({r.kg for r in runs} | ({wanted} if wanted else set()))
    st.session_state[KG_FILTER] = wanted or ALL_KGS  # in step with ?kg= (a link may have changed it)
    picked = st.selectbox("KG", [ALL_KGS, *kgs], key=KG_FILTER, on_change=_kg_filtered,
                          help="List only the runs trained on this KG.")
    return None if picked == ALL_KGS else picked


def pick_runs(runs: list[RunSummary], listed: list[RunSummary]) -> list[RunSummary]:
    by_name = {r.name: r for r in runs}
    picked = runs_in_url(set(by_name))
    st.session_state[PICK] = picked
    options = [r.name for r in listed]
    options += [n for n in picked if n not in options]  # picked runs stay, whatever the KG filter
    names = st.multiselect("Runs to show", options, key=PICK, on_change=_runs_picked,
                           placeholder="pick a run, or several to compare them")
    return [by_name[n] for n in names]


def chart_grid(charts: dict[str, list[dict[str, Any]]], metrics: list[str], per_row: int = 3) -> None:
    for start in range(0, len(metrics), per_row):
        for col, metric in zip(st.columns(per_row), metrics[start:start + per_row]):
            with col:
                title = CHART_LABELS.get(metric, metric.removeprefix(LOSS_PREFIX))
                st.vega_lite_chart(charts[metric], line_spec(title), width="stretch")


def curves(runs: list[RunSummary]) -> None:
    """Loss curves, one chart per term with a line per run; then learning rate and speed."""
    charts = curve_data({r.name: services.run_metrics(r.name) for r in runs})
    st.markdown("#### Loss curves")
    if not charts:
        st.caption("Nothing logged yet: a run logs its losses every `log_every` steps.")
        return
    losses = loss_terms(list(charts))
    chart_grid(charts, losses)
    others = sorted((m for m in charts if m not in losses), key=lambda m: (m != "lr", m))
    if others:
        st.markdown("#### Learning rate and speed")
        chart_grid(charts, others)


def run_caption(run: RunSummary) -> str:
    parts = [run.status, f"KG {md_code(run.kg)}", f"config {md_code(run.config_name or 'unnamed')}",
             f"step {steps_label(run)}", f"started {run.started:%Y-%m-%d %H:%M} UTC",
             f"{duration_label(run.duration)}"]
    if run.parent:
        parts.append(f"from {md_code(run.parent)}")
    return " · ".join(parts)


def evaluations(run: RunSummary) -> None:
    st.markdown("#### Evaluations")
    found = services.run_evaluations(run.name)
    if not found:
        st.caption(f"Not evaluated yet: `kclip eval --run {run.name}` measures it on its KG's test split.")
        return
    for e in found:
        st.markdown(f"**{md(e.kg)} / {md(e.split)}** · step {e.step:,} · {e.created_at:%Y-%m-%d %H:%M} UTC")
        st.dataframe(evaluation_rows(e.metrics), hide_index=True, column_config=VALUE_FORMAT)


def one_run(run: RunSummary) -> None:
    st.subheader(md(run.name))
    st.caption(run_caption(run))
    curves([run])
    evaluations(run)
    with st.expander("Config", icon=":material/settings:"):
        st.json(run.config, expanded=2)


def metrics_side_by_side(runs: list[RunSummary]) -> None:
    st.markdown("#### Evaluations side by side")
    latest = latest_evaluations({r.name: services.run_evaluations(r.name) for r in runs})
    if not latest:
        st.caption("None of these runs is evaluated yet: `kclip eval --run RUN` measures one.")
        return
    for (kg, split), by_run in latest.items():
        steps = ", ".join(f"{md(run)} at step {e.step:,}" for run, e in by_run.items())
        st.markdown(f"**{md(kg)} / {md(split)}**, each run's latest evaluation ({steps})")
        st.dataframe(side_by_side_rows({run: e.metrics for run, e in by_run.items()}), hide_index=True)


def config_differences(runs: list[RunSummary]) -> None:
    st.markdown("#### Config differences")
    rows = config_diff({r.name: r.config for r in runs})
    if rows:
        st.dataframe(rows, hide_index=True)
    else:
        st.caption("Their configs are the same.")


def several_runs(runs: list[RunSummary]) -> None:
    st.subheader(f"{len(runs)} runs compared")
    st.caption(" · ".join(f"{md_code(r.name)} ({r.status}, {steps_label(r)} steps)" for r in runs))
    curves(runs)
    metrics_side_by_side(runs)
    config_differences(runs)


def comparison_label(c: ComparisonRecord) -> str:
    return f"{c.name}  ·  {c.kg}/{c.split}  ·  {c.created_at:%Y-%m-%d %H:%M} UTC"


def show_comparison(c: ComparisonRecord) -> None:
    config = c.config
    seeds = sorted({s for v in c.variants for s in v.seeds}) or [config.get("seed", "?")]
    seeds_label = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(map(str, seeds))} (means)"
    st.caption(f"KG {md_code(c.kg)}, split {md_code(c.split)} · {config.get('max_steps', '?')} steps each, "
               f"{seeds_label} · config {md_code(config.get('name') or 'unnamed')}")
    st.dataframe(comparison_rows(c), hide_index=True)
    bars = comparison_bars(c)
    if bars:
        st.vega_lite_chart(bars, bar_spec(list(dict.fromkeys(b["metric"] for b in bars))), width="stretch")
    measured = [v for v in c.variants if v.metrics]
    if measured:
        with st.expander("Every metric"):
            st.dataframe(side_by_side_rows({v.variant: v.metrics for v in measured}), hide_index=True)
    if len(measured) > 1:
        widgets.page_link("runs", "Its runs side by side", runs=",".join(v.run for v in measured))


def comparisons(kg: str | None) -> None:
    st.subheader("Comparisons")
    found = services.comparisons(kg)
    if not found:
        st.caption(f"No `kclip compare` results recorded{' for this KG' if kg else ''} yet: "
                   f"`kclip compare --kg {kg or 'KG'} --config tiny` trains and evaluates plain CLIP, "
                   "Knowledge-CLIP and its ablations on the same data.")
        return
    chosen = st.selectbox("Comparison", range(len(found)), key=COMPARISON, help="`kclip compare` results, newest first.",
                          format_func=lambda i: comparison_label(found[i]))
    show_comparison(found[chosen])


def main() -> None:
    st.title("Runs")
    st.caption("Training runs from the run registry: loss curves, evaluations and configs. "
               "Pick one run, or several to compare them.")
    with widgets.user_errors():
        runs = services.all_runs()
        if not runs:
            st.info("No runs yet. Train one with `kclip train --kg KG --config tiny` (or `kclip demo`), "
                    "then come back.", icon=widgets.ICON["runs"])
            return
        kg = kg_filter(runs)
        listed = [r for r in runs if kg is None or r.kg == kg]
        if listed:
            st.dataframe(run_rows(listed), hide_index=True)
        else:
            st.info(f"No runs on KG {md_code(kg)} yet: `kclip train --kg {kg} --config tiny` trains one.",
                    icon=widgets.ICON["runs"])
        picked = pick_runs(runs, listed)
        if len(picked) == 1:
            one_run(picked[0])
        elif picked:
            several_runs(picked)
        comparisons(kg)


# Streamlit runs each page file as __main__; importing the module (kclip.ui.views...) renders nothing.
if __name__ == "__main__":
    main()

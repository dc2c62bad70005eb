"""kclip's command line. Each command is a thin wrapper over a library function.

    kclip neo4j start | stop | status
    kclip load FORMAT PATH --kg NAME [--skip-bad] [-o key=value ...]
    kclip synth scene-graphs OUT --images N --seed S
    kclip synth compositional OUT --images N --seed S   (then: kclip eval --run RUN --task aro --data OUT)
    kclip synth visual-genome OUT --images N --seed S | kclip synth conceptnet OUT.csv[.gz] --lines N --seed S
    kclip stats [--kg NAME] [--json]
    kclip drop --kg NAME [--yes] [--wait SECONDS]
    kclip verify --kg NAME [--json] [--examples K]     exit 0: clean, 3: problems found
    kclip search QUERY --kg NAME [--limit N] [--skip N] [--json]
    kclip train --kg NAME --config CONFIG [--run NAME] [--device cuda|cpu] [--max-steps N] [--resume RUN]
    kclip eval --run RUN [--kg NAME] [--split test] [--json]
    kclip compare --kg NAME [--config tiny] [--max-steps N] [--variants clip,knowledge-clip,...] [--seeds 0,1,2]
                  [--init-from RUN|WEIGHTS] [--aro FILE|DIR] [--retrieval FILE --images DIR] [--out DIR]
    kclip embed --run RUN [--kg NAME]
    kclip predict --run RUN (two of --head ID, --relation NAME, --tail ID) [--top-k K]
    kclip ui [--address 127.0.0.1] [--port 8501] [--detach | --stop]
    kclip demo [--wn18rr PATH] [--steps N] [--no-ui]
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from kclip.platform.errors import KclipError, Neo4jLost

if TYPE_CHECKING:
    from kclip.platform.graph_store import SearchPage
    from kclip.platform.settings import Settings

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Knowledge graphs in Neo4j -> Knowledge-CLIP training -> exploration.")
neo4j_app = typer.Typer(no_args_is_help=True, help="The project-managed local Neo4j (for machines without Docker).")
synth_app = typer.Typer(no_args_is_help=True, help="Generate synthetic KGs to try every path without downloads.")
app.add_typer(neo4j_app, name="neo4j")
app.add_typer(synth_app, name="synth")
runs_app = typer.Typer(no_args_is_help=True, help="Training runs in the registry: list them, show one.")
app.add_typer(runs_app, name="runs")
out = Console()
err = Console(stderr=True)


def get_settings() -> "Settings":
    """The settings, imported on first use: pydantic-settings is a good part of a command's start-up,
    and a command that fails on its arguments (`kclip load` of a missing path) never needs it."""
    from kclip.platform.settings import get_settings as settings

    return settings()


# -- neo4j -------------------------------------------------------------------------------------

@neo4j_app.command("start")
def neo4j_start() -> None:
    """Start the local Neo4j (idempotent); returns once Bolt answers."""
    from kclip.platform import local_neo4j

    status = local_neo4j.start(get_settings())
    out.print(f"Neo4j running at {status.bolt_uri} (pid {status.pid}, data in {status.state_dir})")


@neo4j_app.command("stop")
def neo4j_stop() -> None:
    """Stop the local Neo4j cleanly."""
    from kclip.platform import local_neo4j

    was_running = local_neo4j.stop(get_settings())
    out.print("Neo4j stopped" if was_running else "Neo4j was not running")


@neo4j_app.command("status")
def neo4j_status() -> None:
    """Whether the local Neo4j runs, where, and where its data and password live."""
    from kclip.platform import local_neo4j

    status = local_neo4j.status(get_settings())
    state = f"running (pid {status.pid}) at {status.bolt_uri}" if status.running else "not running"
    sizes = f"heap {status.heap}, page cache {status.pagecache}" + ("" if status.running else " at start")
    out.print(f"Neo4j {status.version}: {state}; {sizes}; data in {status.state_dir}; password in {status.password_file}")
    raise typer.Exit(0 if status.running else 3)


# -- loading -----------------------------------------------------------------------------------

def _parse_options(pairs: list[str], dotted: bool = False) -> dict[str, object]:
    from kclip.platform.errors import ConfigError
    from kclip.platform.overrides import parse_overrides  # torch-free: load must start fast

    try:
        options = parse_overrides(pairs)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="--set" if dotted else "--option") from None
    return options if dotted else {key.replace("-", "_"): value for key, value in options.items()}


@app.command("load")
def load(
    format: str = typer.Argument(..., help="source format: tsv, conceptnet, visual-genome, image-text, multimodal"),
    path: Path = typer.Argument(..., help="the dataset's file or directory"),
    kg: str = typer.Option(..., "--kg", help="name of the KG to load into"),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="load the good rows; write bad ones to a rejects report"),
    rejects: Optional[Path] = typer.Option(None, help="where --skip-bad writes its report (default ./rejects-KG.tsv)"),
    option: list[str] = typer.Option([], "--option", "-o", help="format option key=value (repeatable)"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON"),
    wait: float = typer.Option(600, "--wait", min=0, metavar="SECONDS",
                               help="wait this long while another process writes the KG (0: refuse at once)"),
) -> None:
    """Load a KG from files into Neo4j: validated, batched, idempotent, resumable; one writer per KG."""
    from kclip.kg_loaders import get_loader

    loader = get_loader(format)(path, kg=kg, options=_parse_options(option))
    # Imported once the input checks out: a wrong path is reported before Neo4j's driver even loads.
    from kclip.platform.ingest import load_kg
    from kclip.platform.media import MediaStore
    from kclip.platform.neo4j_client import open_graph_store

    settings = get_settings()
    with open_graph_store(settings) as store:
        media = MediaStore(settings.media_root, max_image_pixels=settings.max_image_pixels)
        summary = load_kg(store, loader, media, skip_bad=skip_bad, rejects_path=rejects,
                          wait=wait)
    if as_json:
        out.print_json(json.dumps(summary.as_dict()))
        return
    table = Table(title=f"loaded {kg} in {summary.seconds:.1f}s")
    for column in ("", "added", "already present", "rejected"):
        table.add_column(column, justify="right")
    for kind in ("entities", "relations", "triplets"):
        counts = getattr(summary, kind)
        table.add_row(kind, f"{counts.added:,}", f"{counts.present:,}", f"{counts.rejected:,}")
    out.print(table)
    if summary.unparsed_rows:
        out.print(f"{summary.unparsed_rows:,} rows could not be parsed")
    if summary.rejects_path:
        out.print(f"rejects report: {summary.rejects_path}")
    if summary.leak_warning():
        err.print(Text.assemble(("warning: ", "bold yellow"), summary.leak_warning()))


@synth_app.command("scene-graphs")
def synth_scene_graphs(
    out_dir: Path = typer.Argument(..., help="directory to write (Visual Genome layout + PNG images)"),
    images: int = typer.Option(200, "--images", min=1, help="number of images"),
    seed: int = typer.Option(0, "--seed", help="same seed, byte-identical output"),
    image_size: int = typer.Option(128, "--image-size", min=48, help="image side in pixels"),
) -> None:
    """A deterministic multimodal scene-graph KG: rendered shapes, spatial relations, attributes, captions."""
    from kclip.kg_loaders.synth_scene_graphs import generate_scene_graphs

    summary = generate_scene_graphs(out_dir, images=images, seed=seed, image_size=image_size)
    out.print(f"wrote {summary.images} images, {summary.objects} objects, {summary.relationships} relationships, "
              f"{summary.captions} captions to {summary.out}")
    out.print(f"load it with: kclip load visual-genome {summary.out} --kg scenes")


@synth_app.command("compositional")
def synth_compositional(
    out_dir: Path = typer.Argument(..., help="directory to write (Visual Genome layout + JPEGs + ARO test files)"),
    images: int = typer.Option(300, "--images", min=1, help="number of images"),
    seed: int = typer.Option(0, "--seed", help="same seed, byte-identical output"),
    image_size: int = typer.Option(224, "--image-size", min=96, help="image side in pixels"),
) -> None:
    """Scenes of several shapes (kind, colour, size, left of / above ...) with binding captions, and ARO's
    VG-Relation / VG-Attribution files for the test images: a test bag-of-words CLIP fails."""
    from kclip.kg_loaders.synth_compositional import generate_compositional

    s = generate_compositional(out_dir, images=images, seed=seed, image_size=image_size)
    out.print(f"wrote {s.images} images, {s.objects} objects, {s.relationships} relationships to {s.out}; "
              f"ARO files for its {s.test_images} test images: {s.relation_items} relation and "
              f"{s.attribution_items} attribution items")
    out.print(f"load it with: kclip load visual-genome {s.out} --kg comp; after training: "
              f"kclip eval --run RUN --task aro --data {s.out}")


@synth_app.command("visual-genome")
def synth_visual_genome(
    out_dir: Path = typer.Argument(..., help="directory to write (Visual Genome 1.4 layout + JPEG photos)"),
    images: int = typer.Option(100, "--images", min=1, help="number of images"),
    seed: int = typer.Option(0, "--seed", help="same seed, byte-identical output"),
    width: int = typer.Option(800, "--width", min=64, help="image width in pixels"),
    height: int = typer.Option(600, "--height", min=64, help="image height in pixels"),
    objects: int = typer.Option(35, "--objects", min=2, help="objects per image"),
    relationships: int = typer.Option(20, "--relationships", min=0, help="relationships per image"),
) -> None:
    """Visual Genome's exact layout and scale per image (35 objects, 20 relationships, ~160 KB JPEGs), for load benchmarks."""
    from kclip.kg_loaders.synth_releases import VisualGenomeShape, generate_visual_genome

    shape = VisualGenomeShape(width=width, height=height, objects=objects, relationships=relationships,
                              regions=min(VisualGenomeShape.regions, relationships))
    summary = generate_visual_genome(out_dir, images=images, seed=seed, shape=shape)
    out.print(f"wrote {summary.images:,} images ({summary.image_bytes / 1e6:,.1f} MB), {summary.objects:,} objects, "
              f"{summary.relationships:,} relationships, {summary.regions:,} regions to {summary.out}")
    out.print(f"load it with: kclip load visual-genome {summary.out} --kg vg")


@synth_app.command("conceptnet")
def synth_conceptnet(
    out_file: Path = typer.Argument(..., help="assertions file to write (.csv, or .csv.gz to gzip it)"),
    lines: int = typer.Option(100_000, "--lines", min=1, help="number of assertions"),
    seed: int = typer.Option(0, "--seed", help="same seed, byte-identical output"),
    english_fraction: float = typer.Option(0.1, "--english-fraction", min=0.0, max=1.0,
                                           help="share of lines with both ends English (the real file: ~0.1)"),
) -> None:
    """ConceptNet 5.7's assertions layout: 50 relations, 20 languages, a Zipf-like concept vocabulary."""
    from kclip.kg_loaders.synth_releases import generate_conceptnet

    summary = generate_conceptnet(out_file, lines=lines, seed=seed, english_fraction=english_fraction)
    out.print(f"wrote {summary.lines:,} assertions ({summary.english_lines:,} with both ends English, "
              f"{summary.bytes / 1e6:,.1f} MB) to {summary.out}")
    out.print(f"load it with: kclip load conceptnet {summary.out} --kg cn")


def _stats_table(all_stats: list) -> Table:
    """Entities by modality, relations and triplets by split, one row per KG."""
    from kclip.platform.records import SPLITS

    table = Table(title="knowledge graphs in Neo4j")
    for column in ("KG", "text entities", "image entities", "relations", *SPLITS):
        table.add_column(column, justify="right")
    for s in all_stats:
        table.add_row(s.kg, f"{s.entities.get('text', 0):,}", f"{s.entities.get('image', 0):,}", f"{s.relations:,}",
                      *(f"{s.triplets[split]:,}" for split in SPLITS))
    return table


@app.command("stats")
def stats(
    kg: Optional[str] = typer.Option(None, "--kg", help="one KG (default: all)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Entities by modality, relations, and triplets by split, per KG."""
    from kclip.platform.neo4j_client import open_graph_store

    with open_graph_store(get_settings()) as store:
        if kg is not None:
            store.require_kg(kg)
        all_stats = [store.stats(name) for name in ([kg] if kg else store.list_kgs())]
    if as_json:
        payload = {s.kg: {"entities": s.entities, "relations": s.relations, "triplets": s.triplets} for s in all_stats}
        out.print_json(json.dumps(payload))
        return
    out.print(_stats_table(all_stats))


VERIFY_FOUND_PROBLEMS = 3  # distinct from 1 (an error: nothing was verified) and 2 (bad arguments)


@app.command("drop")
def drop_command(
    kg: str = typer.Option(..., "--kg", help="the KG to delete"),
    yes: bool = typer.Option(False, "--yes", help="really delete it (without: say what would go)"),
    wait: float = typer.Option(600, "--wait", min=0, metavar="SECONDS",
                               help="wait this long while another process writes the KG (0: refuse at once)"),
) -> None:
    """Delete a KG: its entities, relations, triplets, vector index, and the media files no other KG uses."""
    from kclip.platform.manage import drop_kg, plan_drop
    from kclip.platform.media import MediaStore
    from kclip.platform.neo4j_client import open_graph_store

    settings = get_settings()
    media = MediaStore(settings.media_root)
    with open_graph_store(settings) as store:
        store.require_kg(kg)
        if not yes:
            err.print(f"not dropping without --yes; it would delete {plan_drop(store, media, kg).describe()}")
            raise typer.Exit(1)
        dropped = drop_kg(store, media, kg, wait=wait)
    out.print(f"dropped {dropped.describe()}")


@app.command("verify")
def verify_command(
    kg: str = typer.Option(..., "--kg", help="the KG to check"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    examples: int = typer.Option(5, "--examples", min=0, help="examples shown per kind of problem"),
) -> None:
    """Counts, duplicate and leaked triplets, dangling references, missing media. Exit 3 when problems are found."""
    from kclip.platform.manage import verify_kg
    from kclip.platform.media import MediaStore
    from kclip.platform.neo4j_client import open_graph_store

    settings = get_settings()
    with open_graph_store(settings) as store:
        report = verify_kg(store, MediaStore(settings.media_root), kg, examples=examples, progress=not as_json)
    if as_json:
        print(json.dumps(report.as_dict()))
    else:
        out.print(_stats_table([report.stats]))
        out.print(_findings_table(report))
    raise typer.Exit(0 if report.ok else VERIFY_FOUND_PROBLEMS)


def _findings_table(report) -> Table:
    """One row per kind of problem: its count and a few examples."""
    table = Table(title=f"{report.kg}: {'no problems' if report.ok else f'{report.problems:,} problems'} "
                        f"({report.seconds:.1f}s)")
    for column in ("check", "count", "examples"):
        table.add_column(column, justify="right" if column == "count" else "left")
    for name, finding in report.findings.items():
        shown = "\n".join(json.dumps(e, ensure_ascii=False) for e in finding.examples)
        table.add_row(name.replace("_", " "), f"{finding.count:,}", shown)
    return table


@app.command("search")
def search_command(
    query: str = typer.Argument(..., help="words to find in entity texts and ids: all must match, the last one "
                                          "also as the start of a word; Lucene syntax is taken literally"),
    kg: str = typer.Option(..., "--kg", help="the KG to search"),
    limit: int = typer.Option(20, "--limit", min=1, max=1000, help="matches shown"),
    skip: int = typer.Option(0, "--skip", min=0, help="matches passed over first (the next page: --skip LIMIT)"),
    as_json: bool = typer.Option(False, "--json", help="print a JSON list of {id, text, modality, score}"),
) -> None:
    """Full-text search of one KG's entities, best first (those matching the last word whole before the rest)."""
    from kclip.platform.neo4j_client import open_graph_store

    with open_graph_store(get_settings()) as store:
        store.require_kg(kg)
        if not store.search_ready(kg):  # a database an older kclip wrote: brought up to date once
            err.print("updating Neo4j's search index for KGs loaded by an older kclip (once)…")
            store.ensure_schema()
        page = store.search_entities(kg, query, limit=limit, skip=skip)
    if page.note:
        err.print(Text.assemble(("note: ", "bold yellow"), page.note))
    if as_json:
        print(json.dumps([{"id": row.id, "text": row.text, "modality": row.modality, "score": score}
                          for row, score in page.hits], ensure_ascii=False))
        return
    out.print(_search_table(kg, query, page))


def _search_table(kg: str, query: str, page: "SearchPage") -> Table:
    """One row per match of the page, numbered from 1 across pages."""
    first, last = page.skip + 1, page.skip + len(page.hits)
    shown = f"{first:,}-{last:,} of {page.total:,}" if page.hits else f"none of {page.total:,}"
    table = Table(title=f"{kg}: matches {shown} for {query.strip()!r}")
    for column in ("#", "id", "modality", "text", "score"):
        table.add_column(column, justify="right" if column in ("#", "score") else "left")
    for n, (row, score) in enumerate(page.hits, page.skip + 1):
        table.add_row(f"{n:,}", Text(row.id), row.modality, Text(row.text or ""), f"{score:.2f}")
    return table


@app.command("train")
def train_command(
    kg: Optional[str] = typer.Option(None, "--kg", help="KG to train on"),
    config: Optional[str] = typer.Option(None, "--config", help="bundled config (tiny, small, vit-b-32-openai, vit-b-16-openai, vit-b-32-laion, vit-b-16-laion) or a YAML/JSON file"),
    run: Optional[str] = typer.Option(None, "--run", help="name of the run (generated if omitted)"),
    device: Optional[str] = typer.Option(None, "--device", help="cuda or cpu (default: cuda when available)"),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", min=1, help="override the config's max_steps"),
    resume: Optional[str] = typer.Option(None, "--resume", help="continue this run from its last checkpoint"),
    init_from: Optional[str] = typer.Option(None, "--init-from", help="start a new run from another run's latest "
                                            "checkpoint or from a weights file; the KD teacher is that start, frozen"),
    set_: list[str] = typer.Option([], "--set", help="override a config value: data.batch_size=16 (repeatable)"),
) -> None:
    """Train Knowledge-CLIP on a KG in Neo4j. The last line printed is the run's name."""
    from kclip.models.train import train
    from kclip.models.train_config import load_train_config

    if resume is None and config is None:
        raise typer.BadParameter("give --config (or --resume RUN)", param_hint="--config")
    if resume is not None and init_from is not None:
        raise typer.BadParameter("a resumed run continues from its own checkpoint", param_hint="--init-from")
    settings = get_settings()
    overrides = _parse_options(set_, dotted=True) | ({"model.init_from": init_from} if init_from else {})
    cfg = load_train_config(config, overrides) if config else None
    name = train(settings, kg=kg, config=cfg, run_name=run, device=device, max_steps=max_steps, resume=resume)
    print(name)


@runs_app.command("list")
def runs_list(
    kg: Optional[str] = typer.Option(None, "--kg", help="only runs trained on this KG"),
    as_json: bool = typer.Option(False, "--json", help="a JSON list of objects"),
) -> None:
    """Every registered run, newest first: status, KG, config, steps, start, what it started from."""
    from kclip.platform.registry import Registry

    runs = [r for r in Registry(get_settings().registry).list_runs() if kg is None or r.kg == kg]
    rows = [_run_row(r) for r in runs]
    if as_json:
        print(json.dumps(rows))
        return
    table = Table(title=f"{len(rows)} run(s)")
    for column in ("run", "status", "kg", "config", "steps", "started", "from"):
        table.add_column(column, justify="right" if column == "steps" else "left")
    for row in rows:
        table.add_row(row["run"], row["status"], row["kg"], row["config"] or "-",
                      f"{row['step']:,}/{row['max_steps']:,}" if row["max_steps"] else f"{row['step']:,}",
                      row["started"][:16].replace("T", " "), row["from"] or "-")
    out.print(table)


@runs_app.command("show")
def runs_show(
    name: str = typer.Argument(..., help="a run name (see `kclip runs list`)"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object"),
) -> None:
    """One run: its record, lineage back to its first start, checkpoints and evaluations."""
    from kclip.platform.registry import Registry

    registry = Registry(get_settings().registry)
    run = registry.get_run(name)
    shown = {**_run_row(run), "lineage": _lineage(registry, run), "device": run.device,
             "world_size": run.world_size, "checkpoints": [c.step for c in run.checkpoints],
             "evaluations": [{"kg": e.kg, "split": e.split, "step": e.step, "metrics": e.metrics}
                             for e in registry.evaluations(name)],
             "config": run.config}
    if as_json:
        print(json.dumps(shown))
        return
    out.print(f"[bold]{name}[/bold]  {shown['status']} · KG {shown['kg']} · step {shown['step']:,}"
              f" · started {shown['started'][:16].replace('T', ' ')}")
    out.print("lineage: " + " <- ".join([name, *shown["lineage"]]))
    out.print(f"checkpoints at steps: {', '.join(map(str, shown['checkpoints'])) or 'none'}")
    for e in shown["evaluations"]:
        _print_metrics(f"eval on {e['kg']} / {e['split']} at step {e['step']:,}", e["metrics"], False)


def _run_row(run) -> dict[str, object]:
    return {"run": run.name, "status": run.status, "kg": run.kg, "config": run.config.get("name"),
            "step": run.step, "max_steps": run.config.get("max_steps"),
            "started": run.created_at.isoformat(), "from": run.parent}


def _lineage(registry, run) -> list[str]:
    """What the run started from, what that started from, ... (a weights file ends the chain)."""
    chain: list[str] = []
    while run.parent is not None and run.parent not in chain:
        chain.append(run.parent)
        try:
            run = registry.get_run(run.parent)
        except KclipError:  # a weights file, or a run from another registry
            break
    return chain


def _print_metrics(title: str, metrics: dict[str, float], as_json: bool) -> None:
    if as_json:
        print(json.dumps(metrics, sort_keys=True))
        return
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in sorted(metrics.items()):
        table.add_row(name, f"{value:.4f}" if not float(value).is_integer() else f"{value:,.0f}")
    out.print(table)


@app.command("eval")
def eval_command(
    run: str = typer.Option(..., "--run", help="a trained run"),
    kg: Optional[str] = typer.Option(None, "--kg", help="KG to evaluate on (default: the run's)"),
    split: str = typer.Option("test", "--split"),
    device: str = typer.Option("cpu", "--device"),
    max_triplets: Optional[int] = typer.Option(None, "--max-triplets", min=1, help="evaluate a fixed random subset"),
    task: str = typer.Option("link", "--task", help="link: the KG's split; aro: ARO's VG-Relation / VG-Attribution "
                             "JSON; retrieval: a Karpathy-split COCO / Flickr30k JSON; zeroshot: an ImageFolder"),
    data: Optional[Path] = typer.Option(None, "--data", help="the task's file or folder (aro, retrieval, zeroshot)"),
    images: Optional[Path] = typer.Option(None, "--images", help="folder the data file's image paths are relative "
                                          "to (default: the data file's folder)"),
    templates: Optional[Path] = typer.Option(None, "--templates", help="zeroshot: prompt templates, one per line "
                                             "with {} for the class name (default: CLIP's ImageNet templates)"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object, metric names as keys"),
) -> None:
    """Link prediction (filtered MRR, Hits@k), relation prediction, and retrieval / relation-swap where images
    exist; or a downstream task on files users already have (--task aro | retrieval | zeroshot --data ...)."""
    if task == "link":
        from kclip.models.evaluate import evaluate_and_record

        metrics = evaluate_and_record(get_settings(), run, kg, split, device, max_triplets, progress=not as_json)
        _print_metrics(f"{run} on {kg or 'its KG'}/{split}", metrics, as_json)
        return
    if task not in DOWNSTREAM_TASKS:
        raise typer.BadParameter(f"one of link, {', '.join(DOWNSTREAM_TASKS)}", param_hint="--task")
    if data is None:
        raise typer.BadParameter(f"--task {task} needs --data (see --help)", param_hint="--data")
    from kclip.models.downstream import evaluate_downstream_and_record

    metrics = evaluate_downstream_and_record(get_settings(), run, task, data, images=images, templates=templates,
                                             split=split, device=device, progress=not as_json)
    _print_metrics(f"{run} on {task} {data}", metrics, as_json)


DOWNSTREAM_TASKS = ("aro", "retrieval", "zeroshot")


@app.command("embed")
def embed_command(
    run: str = typer.Option(..., "--run", help="a trained run"),
    kg: Optional[str] = typer.Option(None, "--kg", help="KG to embed (default: the run's)"),
    device: str = typer.Option("cpu", "--device"),
) -> None:
    """Write each entity's embedding to its Neo4j node and build a vector index (multimodal neighbours)."""
    from kclip.models.embed import write_embeddings
    from kclip.models.inference import load_run
    from kclip.platform.neo4j_client import open_graph_store

    settings = get_settings()
    loaded = load_run(settings, run, device)
    with open_graph_store(settings) as store:
        store.require_kg(kg or loaded.kg)
        summary = write_embeddings(loaded, store, kg or loaded.kg)
    out.print(f"embedded {summary.entities:,} entities of {summary.kg} ({summary.dimensions} dimensions) "
              f"with run {summary.run}; vector index ready")


@app.command("predict")
def predict_command(
    run: str = typer.Option(..., "--run"),
    kg: Optional[str] = typer.Option(None, "--kg", help="default: the run's KG"),
    head: Optional[str] = typer.Option(None, "--head", help="head entity id"),
    relation: Optional[str] = typer.Option(None, "--relation", help="relation name"),
    tail: Optional[str] = typer.Option(None, "--tail", help="tail entity id"),
    top_k: int = typer.Option(10, "--top-k", "-k", min=1),
    device: str = typer.Option("cpu", "--device"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Give two of --head, --relation, --tail: predicts the third, top-k with scores."""
    from kclip.models.predict import Predictor
    from kclip.platform.neo4j_client import open_graph_store

    given = tuple(x is not None for x in (head, relation, tail))
    if sum(given) != 2:
        raise typer.BadParameter("give exactly two of --head, --relation, --tail")
    settings = get_settings()
    with open_graph_store(settings) as store:
        predictor = Predictor.from_run(settings, run, store, device)
        kg = kg or predictor.run.kg
        if tail is None:
            rows = [(p.entity.id, p.entity.text or p.entity.image, p.score, p.known) for p in predictor.tails(kg, head, relation, top_k)]
        elif head is None:
            rows = [(p.entity.id, p.entity.text or p.entity.image, p.score, p.known) for p in predictor.heads(kg, relation, tail, top_k)]
        else:
            rows = [(p.relation.name, p.relation.text, p.score, p.known) for p in predictor.relations(kg, head, tail, top_k)]
    if as_json:
        print(json.dumps([{"id": a, "text": b, "score": c, "known": d} for a, b, c, d in rows]))
        return
    table = Table(title=f"predictions of {run}")
    for column in ("#", "id / relation", "text", "score", "in KG"):
        table.add_column(column)
    for i, (a, b, c, d) in enumerate(rows, 1):
        table.add_row(str(i), a, str(b), f"{c:.4f}", "yes" if d else "")
    out.print(table)


@app.command("compare")
def compare_command(
    kg: str = typer.Option(..., "--kg"),
    config: str = typer.Option("tiny", "--config", help="shared training config (bundled name or file)"),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", min=1, help="step budget of every variant"),
    variants: str = typer.Option("clip,knowledge-clip,no-g2e,no-e2r,no-kd,no-entity-embedding", "--variants"),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="comma-separated, e.g. 0,1,2 (default: the config's)"),
    init_from: Optional[str] = typer.Option(None, "--init-from", help="every variant starts from this run's latest "
                                            "checkpoint or this weights file (KD's teacher)"),
    split: str = typer.Option("test", "--split"),
    prefix: Optional[str] = typer.Option(None, "--prefix", help="run names are PREFIX-VARIANT-sSEED"),
    device: Optional[str] = typer.Option(None, "--device"),
    max_triplets: Optional[int] = typer.Option(None, "--max-triplets", min=1),
    aro: Optional[Path] = typer.Option(None, "--aro", help="also ARO's test: an ARO JSON file or a folder holding them"),
    retrieval: Optional[Path] = typer.Option(None, "--retrieval", help="also retrieval on a Karpathy-split JSON"),
    images: Optional[Path] = typer.Option(None, "--images", help="the folder --retrieval's image paths are relative to"),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="write compare.md / .json / .png here "
                                           "(default: RUNS_DIR/comparisons/PREFIX)"),
    set_: list[str] = typer.Option([], "--set", help="override a config value (repeatable)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """CLIP-continued vs Knowledge-CLIP vs ablations: same start, same batches, several seeds (mean and spread)."""
    from kclip.models.compare import VARIANTS, Extras, markdown, run_comparison, write_outputs
    from kclip.models.train_config import load_train_config
    from kclip.platform.registry import new_run_name

    chosen = [v.strip() for v in variants.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown:
        raise typer.BadParameter(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}", param_hint="--variants")
    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()] if seeds else None
    except ValueError:
        raise typer.BadParameter(f"{seeds!r}: comma-separated integers, e.g. 0,1,2", param_hint="--seeds") from None
    if retrieval is None and images is not None:
        raise typer.BadParameter("--images goes with --retrieval", param_hint="--images")
    overrides = _parse_options(set_, dotted=True) | ({"model.init_from": init_from} if init_from else {})
    cfg = load_train_config(config, overrides)
    if max_steps is not None:
        cfg = cfg.model_copy(update={"max_steps": max_steps})
    settings = get_settings()
    name = prefix or new_run_name(f"{kg}-cmp")
    result = run_comparison(settings, kg, cfg, name, chosen, split, device, max_triplets, progress=not as_json,
                            seeds=seed_list, extras=Extras(aro, retrieval, images))
    paths = write_outputs(result, out_dir or settings.runs_root / "comparisons" / name)
    if as_json:
        print(json.dumps(result.to_json()))
        return
    print(markdown(result))
    out.print(f"written: {', '.join(str(p) for p in paths.values())}")
    out.print(f"recorded in the run registry as comparison {name} (the explorer's Runs page shows it)")


@app.command("ui")
def ui_command(
    address: str = typer.Option("127.0.0.1", "--address", help="interface to listen on (127.0.0.1: this machine only)"),
    port: int = typer.Option(8501, "--port"),
    detach: bool = typer.Option(False, "--detach", help="run in the background (stop with --stop)"),
    stop: bool = typer.Option(False, "--stop", help="stop every explorer started from this KCLIP_HOME (detached, by the demo, or in a terminal)"),
) -> None:
    """Serve the Streamlit explorer (KGs, entities, predictions, multimodal neighbours)."""
    from kclip.ui.launch import serve_ui, start_detached, stop_all

    settings = get_settings()
    if stop:
        stopped = stop_all(settings.home)
        out.print(f"stopped {stopped} explorer(s)" if stopped else "no explorer was running")
    elif detach:
        pid = start_detached(settings.home, address, port)
        out.print(f"explorer at http://{address}:{port} (pid {pid}); stop it with `kclip ui --stop`")
    else:
        out.print(f"explorer at http://{address}:{port} (Ctrl-C or `kclip ui --stop` stops it)")
        serve_ui(settings.home, address, port)


@app.command("demo")
def demo_command(
    wn18rr: Optional[Path] = typer.Option(None, "--wn18rr", help="a WN18RR directory to load as well"),
    steps: int = typer.Option(150, "--steps", min=1, help="training steps of the tiny model"),
    images: int = typer.Option(300, "--images", min=10, help="synthetic scene-graph images"),
    ui: bool = typer.Option(True, "--ui/--no-ui", help="serve the explorer at the end"),
    port: int = typer.Option(8501, "--port"),
) -> None:
    """Neo4j up, KGs generated and loaded, a short training run evaluated and embedded, the UI served."""
    from kclip.demo import run_demo

    result = run_demo(get_settings(), lambda text: out.print(f"[bold]==>[/] {text}"), wn18rr, steps, images, ui, port)
    out.print(_stats_table(result["stats"]))
    _print_metrics(f"run {result['run']} on scenes/test", result["metrics"], as_json=False)
    if result["ui"]:
        out.print(f"UI: {result['ui']}  (stop it with `kclip ui --stop`)")
    out.print(f"next: kclip predict --run {result['run']} --head object:1 --tail object:2")


def main() -> None:
    # The driver logs each retry of a transaction as a warning; the error that ends a command says enough.
    logging.getLogger("neo4j.pool").setLevel(logging.ERROR)
    try:
        app()
    except KclipError as exc:
        _fail(str(exc), exc.exit_code)
    except Exception as exc:
        from kclip.platform.neo4j_client import LOST  # here, not above: `kclip --help` need not load the driver

        if not isinstance(exc, LOST):
            raise
        # Neo4j gone in a command that does not say how far it got (load and train do, as Neo4jLost).
        _fail(f"lost Neo4j ({exc.__class__.__name__}); run the same command again once Neo4j is back",
              Neo4jLost.exit_code)


def _fail(message: str, exit_code: int) -> None:
    err.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)  # one line, however long
    sys.exit(exit_code)

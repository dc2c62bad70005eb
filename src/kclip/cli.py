"""kclip's command line. Each command is a thin wrapper over a library function.

    kclip neo4j start | stop | status
    kclip load FORMAT PATH --kg NAME [--skip-bad] [-o key=value ...]
    kclip synth scene-graphs OUT --images N --seed S
    kclip synth visual-genome OUT --images N --seed S | kclip synth conceptnet OUT.csv[.gz] --lines N --seed S
    kclip stats [--kg NAME] [--json]
    kclip drop --kg NAME [--yes] [--wait SECONDS]
    kclip verify --kg NAME [--json] [--examples K]     exit 0: clean, 3: problems found
    kclip train --kg NAME --config CONFIG [--run NAME] [--device cuda|cpu] [--max-steps N] [--resume RUN]
    kclip eval --run RUN [--kg NAME] [--split test] [--json]
    kclip compare --kg NAME [--config tiny] [--max-steps N] [--variants clip,knowledge-clip,...]
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
    from kclip.platform.settings import Settings

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Knowledge graphs in Neo4j -> Knowledge-CLIP training -> exploration.")
neo4j_app = typer.Typer(no_args_is_help=True, help="The project-managed local Neo4j (for machines without Docker).")
synth_app = typer.Typer(no_args_is_help=True, help="Generate synthetic KGs to try every path without downloads.")
app.add_typer(neo4j_app, name="neo4j")
app.add_typer(synth_app, name="synth")
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


@app.command("train")
def train_command(
    kg: Optional[str] = typer.Option(None, "--kg", help="KG to train on"),
    config: Optional[str] = typer.Option(None, "--config", help="bundled config (tiny, small, vit-b-32, vit-b-16) or a YAML/JSON file"),
    run: Optional[str] = typer.Option(None, "--run", help="name of the run (generated if omitted)"),
    device: Optional[str] = typer.Option(None, "--device", help="cuda or cpu (default: cuda when available)"),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", min=1, help="override the config's max_steps"),
    resume: Optional[str] = typer.Option(None, "--resume", help="continue this run from its last checkpoint"),
    set_: list[str] = typer.Option([], "--set", help="override a config value: data.batch_size=16 (repeatable)"),
) -> None:
    """Train Knowledge-CLIP on a KG in Neo4j. The last line printed is the run's name."""
    from kclip.models.train import train
    from kclip.models.train_config import load_train_config

    if resume is None and config is None:
        raise typer.BadParameter("give --config (or --resume RUN)", param_hint="--config")
    settings = get_settings()
    cfg = load_train_config(config, _parse_options(set_, dotted=True)) if config else None
    name = train(settings, kg=kg, config=cfg, run_name=run, device=device, max_steps=max_steps, resume=resume)
    print(name)


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
    as_json: bool = typer.Option(False, "--json", help="one JSON object, metric names as keys"),
) -> None:
    """Link prediction (filtered MRR, Hits@k), relation prediction, and retrieval / relation-swap where images exist."""
    from kclip.models.evaluate import evaluate_and_record

    metrics = evaluate_and_record(get_settings(), run, kg, split, device, max_triplets, progress=not as_json)
    _print_metrics(f"{run} on {kg or 'its KG'}/{split}", metrics, as_json)


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
    variants: str = typer.Option(",".join(["clip", "knowledge-clip", "no-g2e", "no-e2r", "no-kd"]), "--variants"),
    split: str = typer.Option("test", "--split"),
    prefix: Optional[str] = typer.Option(None, "--prefix", help="run names are PREFIX-VARIANT"),
    device: Optional[str] = typer.Option(None, "--device"),
    max_triplets: Optional[int] = typer.Option(None, "--max-triplets", min=1),
    set_: list[str] = typer.Option([], "--set", help="override a config value (repeatable)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Plain CLIP vs Knowledge-CLIP vs ablations (no G2E, no E2R, no KD): same data, steps and seed."""
    from kclip.models.compare import HEADLINE, VARIANTS, compare
    from kclip.models.train_config import load_train_config
    from kclip.platform.registry import new_run_name

    chosen = [v.strip() for v in variants.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown:
        raise typer.BadParameter(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}", param_hint="--variants")
    cfg = load_train_config(config, _parse_options(set_, dotted=True))
    if max_steps is not None:
        cfg = cfg.model_copy(update={"max_steps": max_steps})
    results = compare(get_settings(), kg, cfg, prefix or new_run_name(f"{kg}-cmp"), chosen, split, device,
                      max_triplets, progress=not as_json)
    if as_json:
        print(json.dumps({r.variant: {"run": r.run, **r.metrics, **({"note": r.note} if r.note else {})} for r in results}))
        return
    table = Table(title=f"{kg}/{split}, {cfg.max_steps} steps each, seed {cfg.seed}")
    table.add_column("variant")
    for metric in HEADLINE:
        table.add_column(metric, justify="right")
    for r in results:
        cells = [f"{r.metrics[m]:.3f}" if m in r.metrics else "-" for m in HEADLINE]
        table.add_row(r.variant + (f" ({r.note})" if r.note else ""), *cells)
    out.print(table)


@app.command("ui")
def ui_command(
    address: str = typer.Option("127.0.0.1", "--address", help="interface to listen on (127.0.0.1: this machine only)"),
    port: int = typer.Option(8501, "--port"),
    detach: bool = typer.Option(False, "--detach", help="run in the background (stop with --stop)"),
    stop: bool = typer.Option(False, "--stop", help="stop the explorer started with --detach or by the demo"),
) -> None:
    """Serve the Streamlit explorer (KGs, entities, predictions, multimodal neighbours)."""
    from kclip.ui.launch import serve_ui, start_detached, stop_detached

    settings = get_settings()
    if stop:
        out.print("explorer stopped" if stop_detached(settings.home) else "no detached explorer was running")
    elif detach:
        pid = start_detached(settings.home, address, port)
        out.print(f"explorer at http://{address}:{port} (pid {pid}); stop it with `kclip ui --stop`")
    else:
        out.print(f"explorer at http://{address}:{port} (Ctrl-C stops it)")
        raise typer.Exit(serve_ui(address, port))


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

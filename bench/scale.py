"""Field-scale ingest benchmark: ConceptNet- and Visual Genome-shaped loads into a populated database.

    .venv/bin/python bench/scale.py [--lines 1000000] [--images 1000] [--workdir ~/.kclip/bench-scale]
                                    [--fresh] [--train-steps 20] [--no-train] [--no-ingest-bench] [--profile]

In one run (these machines are noisy, so every figure comes with an in-run baseline):

1. generates, once (cached under --workdir), a ConceptNet 5.7-layout assertions file of --lines
   lines and a Visual Genome 1.4-layout set of --images 800x600 JPEG images
   (``kclip.kg_loaders.synth_releases``);
2. makes sure the database holds the demo KGs (``scenes``, ``wn18rr``), so loads meet a populated
   database as users' do;
3. loads each with ``kclip load`` in a subprocess (the real entry point; its peak RSS read with
   ``os.wait4``) into ``bench-cn`` / ``bench-vg`` (dropped first; ``--fresh`` takes new names
   instead), images into a media store of the benchmark's own, emptied first, so its growth is the
   load's: rows/s, entities/s, triplets/s, peak RSS, media bytes added vs source image bytes;
4. baselines: one plain decode of every source image (Pillow open + load), and one plain read of
   the assertions file (gunzip, split each line into fields); the loads as multiples of them;
5. ``kclip train --config tiny`` on each KG for 1 step and for 1 + --train-steps steps: the first
   (process start to first step done) is the time to the first batch, the difference gives steps/s;
6. projects full ConceptNet 5.7 (34M lines) and full VG (108,077 images, 3.8M objects) from the
   measured rates (loads scale linearly in rows here; entity counts grow slower than lines, so the
   ConceptNet projection is on the safe side);
7. runs ``bench/ingest.py`` on a throwaway empty database and on this populated one.

``--profile`` instead profiles the ConceptNet-shaped load in-process: time per phase (read lines,
loader records, validation + spool, writes) in microseconds per line, then cProfile's top functions.
Targets (issue 7): VG-shaped load >= 20x faster per object than before; ConceptNet-shaped entities
>= 20,000/s; media growth <= 1.1x the source images.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from common import DEFAULT_WN18RR, ensure_kg
from kclip.kg_loaders.synth_releases import VisualGenomeShape, generate_conceptnet, generate_visual_genome
from kclip.kg_loaders.synth_scene_graphs import generate_scene_graphs
from kclip.platform.neo4j_client import open_graph_store
from kclip.platform.registry import Registry
from kclip.platform.settings import get_settings

HERE = Path(__file__).resolve().parent
KCLIP = Path(sys.executable).with_name("kclip")
FULL_CONCEPTNET_LINES = 34_074_917  # conceptnet-assertions-5.7.0.csv
FULL_VG_IMAGES, FULL_VG_OBJECTS = 108_077, 3_802_374  # Visual Genome 1.4
SEED = 0


def say(text: str) -> None:
    print(f"[scale] {text}", file=sys.stderr, flush=True)


# -- data ----------------------------------------------------------------------------------------

def conceptnet_file(workdir: Path, lines: int) -> Path:
    path = workdir / f"conceptnet-{lines}-s{SEED}.csv.gz"
    if not path.is_file():
        say(f"generating {lines:,} ConceptNet-shaped lines into {path}")
        partial = path.with_suffix(".partial.gz")  # a killed run must not leave a short file behind
        generate_conceptnet(partial, lines, seed=SEED)
        partial.rename(path)
    return path


def visual_genome_dir(workdir: Path, images: int) -> Path:
    path = workdir / f"vg-{images}-s{SEED}"
    if not (path / ".complete").is_file():
        say(f"generating {images:,} VG-shaped images into {path}")
        generate_visual_genome(path, images, seed=SEED)
        (path / ".complete").touch()
    return path


def source_images(vg: Path) -> list[Path]:
    return sorted(p for folder in ("VG_100K", "VG_100K_2") for p in (vg / folder).glob("*.jpg"))


def ensure_demo_kgs(workdir: Path) -> None:
    """The demo's KGs (``kclip demo`` loads the same), so the loads below meet a populated database."""
    settings = get_settings()
    scenes = workdir / "scenes"
    if not (scenes / "scene_graphs.json").is_file():
        generate_scene_graphs(scenes, images=300, seed=0)
    with open_graph_store(settings) as store:
        say("making sure the demo KGs (scenes, wn18rr) are loaded")
        ensure_kg(store, settings, "scenes", "visual-genome", scenes)
        if DEFAULT_WN18RR.is_dir():
            ensure_kg(store, settings, "wn18rr", "tsv", DEFAULT_WN18RR)


# -- subprocesses --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Finished:
    seconds: float
    peak_rss_mb: float
    stdout: str


def run_measured(cmd: list[str], env: dict[str, str]) -> Finished:
    """Run ``cmd``, stderr passed through (progress), stdout kept; wall time and the child's peak RSS."""
    with tempfile.TemporaryFile("w+") as captured:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=captured, env=env)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, not all children's
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        captured.seek(0)
        stdout = captured.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stdout[-2000:]}")
    return Finished(seconds, usage.ru_maxrss / 1024, stdout)  # ru_maxrss is in KiB on Linux


def bench_env(workdir: Path, kg: str) -> dict[str, str]:
    """The environment of the subprocesses: a media store and run registry of the benchmark's own."""
    return {**os.environ, "KCLIP_MEDIA_DIR": str(workdir / "media" / kg), "KCLIP_RUNS_DIR": str(workdir / "runs"),
            "KCLIP_REGISTRY_URL": f"sqlite:///{workdir / 'runs.db'}"}


def directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


# -- loads ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LoadResult:
    kg: str
    rows: int
    load_seconds: float  # load_kg's own time, as the summary reports it
    wall_seconds: float  # the whole `kclip load` process
    entities: int
    triplets: int
    peak_rss_mb: float
    media_bytes: int


def prepare_kg(kg: str, workdir: Path) -> None:
    """Drop the KG if a previous run left it, and empty its media store."""
    settings = get_settings()
    with open_graph_store(settings) as store:
        if kg in store.list_kgs():
            say(f"dropping {kg} from a previous run")
            store.drop_kg(kg)
    shutil.rmtree(workdir / "media" / kg, ignore_errors=True)


def load(fmt: str, path: Path, kg: str, rows: int, workdir: Path) -> LoadResult:
    prepare_kg(kg, workdir)
    say(f"kclip load {fmt} {path} --kg {kg}")
    env = bench_env(workdir, kg)
    done = run_measured([str(KCLIP), "load", fmt, str(path), "--kg", kg, "--json"], env)
    summary = json.loads(done.stdout)
    return LoadResult(kg, rows, summary["seconds"], done.seconds, summary["entities"]["added"],
                      summary["triplets"]["added"], done.peak_rss_mb, directory_bytes(Path(env["KCLIP_MEDIA_DIR"])))


def decode_all(images: list[Path]) -> float:
    """Seconds for one plain decode of every image: the floor any image ingest pays once."""
    start = time.perf_counter()
    for path in images:
        with Image.open(path) as img:
            img.load()
    return time.perf_counter() - start


def read_assertions(path: Path) -> float:
    """Seconds to gunzip the assertions and split every line into its fields: the parse floor."""
    start = time.perf_counter()
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            line.rstrip("\n").split("\t")
    return time.perf_counter() - start


def print_load(title: str, result: LoadResult, row_unit: str) -> None:
    s = result.load_seconds
    print(f"{title}: {result.rows:,} {row_unit} -> {result.entities:,} entities, {result.triplets:,} triplets")
    print(f"  load_kg {s:8.1f} s (process {result.wall_seconds:.1f} s)  {result.rows / s:10,.0f} {row_unit}/s  "
          f"{result.entities / s:9,.0f} entities/s  {result.triplets / s:9,.0f} triplets/s  "
          f"peak RSS {result.peak_rss_mb:,.0f} MB")


# -- training ------------------------------------------------------------------------------------

def train_rates(kg: str, steps: int, workdir: Path) -> tuple[float, float]:
    """(seconds from process start to the first step done, steps/s after it) of the tiny config.

    The rate is the trainer's own (``steps_per_s``, logged every step, the first left out): the
    difference of two process times was swamped by process start noise on a busy machine.
    """
    env = bench_env(workdir, kg)
    base = [str(KCLIP), "train", "--kg", kg, "--config", "tiny", "--device", "cpu"]
    say(f"kclip train --kg {kg}: 1 step, then {1 + steps} steps")
    first = run_measured(base + ["--max-steps", "1"], env).seconds
    run = f"{kg}-rate-{int(time.time())}"
    run_measured(base + ["--max-steps", str(1 + steps), "--run", run, "--set", "log_every=1"], env)
    rates = [value for step, _, value in Registry(env["KCLIP_REGISTRY_URL"]).metrics(run, "steps_per_s") if step > 1]
    if not rates:
        return first, float("nan")
    return first, 1 / (sum(1 / r for r in rates) / len(rates))  # from the mean time per step


# -- report --------------------------------------------------------------------------------------

def report_conceptnet(result: LoadResult, read_s: float) -> None:
    print_load("ConceptNet-shaped", result, "lines")
    print(f"  plain read (gunzip + split)  {read_s:6.1f} s: load = {result.load_seconds / read_s:5.1f}x the read")
    print(f"  entities/s = {result.entities / result.load_seconds:,.0f}   (target >= 20,000)")
    full = FULL_CONCEPTNET_LINES / (result.rows / result.load_seconds)
    print(f"  full ConceptNet 5.7 ({FULL_CONCEPTNET_LINES / 1e6:.0f}M lines) projected: {full / 3600:5.1f} h")


def report_visual_genome(result: LoadResult, images: int, objects: int, image_bytes: int, decode_s: float) -> None:
    print_load("VG-shaped", result, "objects")
    per_object_us = result.load_seconds / objects * 1e6
    print(f"  {images:,} images, {image_bytes / 1e6:,.0f} MB; one plain decode of each {decode_s:6.1f} s: "
          f"load = {result.load_seconds / decode_s:5.1f}x the decode   (target: a few times)")
    print(f"  {per_object_us:,.0f} us per object; {result.load_seconds / images * 1e3:,.0f} ms per image")
    print(f"  media store +{result.media_bytes / 1e6:,.0f} MB = {result.media_bytes / image_bytes:5.2f}x "
          f"the source images   (target <= 1.1x)")
    full = FULL_VG_OBJECTS * result.load_seconds / objects
    print(f"  full VG ({FULL_VG_IMAGES:,} images, {FULL_VG_OBJECTS / 1e6:.1f}M objects) projected: "
          f"{full / 3600:5.1f} h "
          f"(one decode of each image: {FULL_VG_IMAGES * decode_s / images / 3600:4.1f} h)")


def run_ingest_bench() -> None:
    for label, flags in (("fresh database", ["--fresh-database"]), ("populated database", [])):
        say(f"bench/ingest.py on a {label}")
        done = subprocess.run([sys.executable, str(HERE / "ingest.py"), *flags], capture_output=True, text=True)
        print(f"bench/ingest.py, {label}:")
        print("  " + (done.stdout.strip() or done.stderr.strip()[-2000:]).replace("\n", "\n  "))


# -- profile -------------------------------------------------------------------------------------

class _Timed:
    """Wraps a GraphStore method to add up the seconds spent in it (over all writer threads)."""

    def __init__(self, fn):
        self.fn, self.seconds, self.calls = fn, 0.0, 0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start
            self.calls += 1


def _drain(items) -> int:
    return sum(1 for _ in items)


def profile_conceptnet(path: Path, workdir: Path) -> None:
    """Where a ConceptNet-shaped load spends its time: cumulative phases, then cProfile's top functions."""
    import cProfile
    import pstats

    from kclip.kg_loaders.conceptnet import FIELDS, ConceptNetLoader
    from kclip.platform import ingest
    from kclip.platform.media import MediaStore

    settings = get_settings()
    kg = "bench-cn-profile"
    prepare_kg(kg, workdir)
    lines = _drain(gzip.open(path, "rb"))
    phases: list[tuple[str, float, int]] = []

    def phase(name: str, fn) -> None:
        start = time.perf_counter()
        n = fn()
        phases.append((name, time.perf_counter() - start, n))
        say(f"{name}: {phases[-1][1]:.1f} s")

    loader = ConceptNetLoader(path, kg=kg)
    phase("read_lines (gunzip, decode)", lambda: _drain(loader.read_lines(path, "")))
    phase("+ read_fields (split, strip)", lambda: _drain(loader.read_fields(path, FIELDS)))
    phase("+ records() (parse, pydantic)", lambda: _drain(loader.records()))
    validate = ingest._validate  # timed inside the real load, whatever its signature
    ingest._validate = pass1 = _Timed(validate)
    profiler = cProfile.Profile()
    try:
        with open_graph_store(settings) as store:
            store.write_entities = entity_writes = _Timed(store.write_entities)
            store.write_triplets = triplet_writes = _Timed(store.write_triplets)
            media = MediaStore(workdir / "media" / kg)
            phase("whole load_kg", lambda: profiler.runcall(ingest.load_kg, store, loader, media,
                                                            progress=False).entities.added)
            store.drop_kg(kg)
    finally:
        ingest._validate = validate
    kept = sum(1 for r in loader.records() if type(r).__name__ == "Triplet")
    print(f"ConceptNet-shaped load profile: {lines:,} lines, {kept:,} kept assertions, {phases[-1][2]:,} entities")
    previous = 0.0
    for name, seconds, _ in phases[:3]:
        print(f"  {name:34s} {seconds:6.1f} s  +{(seconds - previous) / lines * 1e6:6.2f} us/line")
        previous = seconds
    total = phases[3][1]
    print(f"  {'load_kg pass 1 (records, validate, spool)':34s} {pass1.seconds:6.1f} s  "
          f"+{(pass1.seconds - previous) / lines * 1e6:6.2f} us/line over records()")
    print(f"  {'load_kg pass 2 (writes)':34s} {total - pass1.seconds:6.1f} s  "
          f"{(total - pass1.seconds) / kept * 1e6:6.1f} us per kept assertion")
    print(f"  {'whole load_kg':34s} {total:6.1f} s  {total / lines * 1e6:6.2f} us/line, "
          f"{total / kept * 1e6:6.1f} us per kept assertion, {phases[-1][2] / total:,.0f} entities/s")
    for name, timed in (("GraphStore.write_entities", entity_writes), ("GraphStore.write_triplets", triplet_writes)):
        print(f"  {name:34s} {timed.seconds:6.1f} s in {timed.calls} calls (summed over writer threads)")
    print("cProfile of load_kg, main thread (writer threads show as waits), by own time:")
    pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(18)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=1_000_000, help="ConceptNet-shaped assertions")
    parser.add_argument("--images", type=int, default=1_000, help="VG-shaped images (35 objects each)")
    parser.add_argument("--workdir", type=Path, default=Path.home() / ".kclip" / "bench-scale")
    parser.add_argument("--fresh", action="store_true", help="load into new KG names instead of dropping the old")
    parser.add_argument("--train-steps", type=int, default=20)
    parser.add_argument("--no-train", action="store_true")
    parser.add_argument("--no-ingest-bench", action="store_true")
    parser.add_argument("--profile", action="store_true", help="profile the ConceptNet-shaped load in-process instead")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    assertions = conceptnet_file(args.workdir, args.lines)
    if args.profile:
        profile_conceptnet(assertions, args.workdir)
        return
    vg = visual_genome_dir(args.workdir, args.images)
    ensure_demo_kgs(args.workdir)
    suffix = time.strftime("-%Y%m%d%H%M%S") if args.fresh else ""
    kgs = {"cn": f"bench-cn{suffix}", "vg": f"bench-vg{suffix}"}
    images = source_images(vg)
    objects = args.images * VisualGenomeShape().objects
    say("baselines: reading the assertions, decoding every image")
    read_s, decode_s = read_assertions(assertions), decode_all(images)
    cn = load("conceptnet", assertions, kgs["cn"], args.lines, args.workdir)
    vg_result = load("visual-genome", vg, kgs["vg"], objects, args.workdir)
    trains = {} if args.no_train else {k: train_rates(kg, args.train_steps, args.workdir) for k, kg in kgs.items()}
    settings = get_settings()
    with open_graph_store(settings) as store:
        others = [kg for kg in store.list_kgs() if kg not in kgs.values()]
    print(f"database {settings.bolt_uri}, holding also: {', '.join(others) or 'nothing else'}")
    report_conceptnet(cn, read_s)
    report_visual_genome(vg_result, args.images, objects, sum(p.stat().st_size for p in images), decode_s)
    for key, (first_s, steps_per_s) in trains.items():
        print(f"train tiny on {kgs[key]}: first step done {first_s:5.1f} s after start, "
              f"then {steps_per_s:5.2f} steps/s")
    if not args.no_ingest_bench:
        run_ingest_bench()


if __name__ == "__main__":
    main()

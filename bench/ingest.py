"""Ingest benchmark: WN18RR into a fresh KG, three ways, in one run (these machines are noisy).

    .venv/bin/python bench/ingest.py [--wn18rr PATH] [--naive-triplets 3000] [--fresh-database]

1. kclip: ``kclip.platform.ingest.load_kg`` end to end (parse, validate, write; entities included).
2. naive: one auto-commit MERGE per entity and per triplet (rate measured on a subset).
3. bulk: the same graph through LOAD CSV (CSV files served over HTTP to Neo4j), ``CALL { } IN
   TRANSACTIONS``, the same schema and indexes: Neo4j's own bulk path, no Python in the loop.

By default it runs against the configured database, whatever it holds; ``--fresh-database`` starts
a throwaway empty local Neo4j for the run instead (a populated database's indexes and page cache
change the rates). Prints triplets/s of each and the ratios kclip/naive and bulk/kclip. Targets
(issue 2): kclip >= 50,000 triplets/s, >= 20x naive, within 3x of bulk.
"""

from __future__ import annotations

import argparse
import csv
import functools
import http.server
import shutil
import socket
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from common import DEFAULT_WN18RR
from kclip.kg_loaders.tsv import TsvLoader
from kclip.platform.ingest import load_kg
from kclip.platform.media import MediaStore
from kclip.platform.neo4j_client import open_graph_store
from kclip.platform.records import Relation
from kclip.platform.settings import Settings, get_settings, load_settings

SPLIT_FILES = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}


def read_wn18rr(path: Path):
    entities = [line.rstrip("\n").split("\t", 1) for line in open(path / "entity2text.txt", encoding="utf-8")]
    triplets = []
    for split, name in SPLIT_FILES.items():
        for line in open(path / name, encoding="utf-8"):
            if line.strip():
                h, r, t = line.rstrip("\n").split("\t")
                triplets.append((h, r, t, split))
    return entities, triplets


def bench_kclip(store, path: Path, kg: str, media: MediaStore) -> float:
    start = time.perf_counter()
    summary = load_kg(store, TsvLoader(path, kg=kg), media, progress=False)
    seconds = time.perf_counter() - start
    assert summary.triplets.added == 93003, summary.as_dict()
    return seconds


def bench_naive(store, entities, triplets, kg: str, n: int) -> float:
    """Seconds per triplet for one MERGE per row (entities of the subset first), auto-commit each."""
    subset = triplets[:n]
    needed = {e for h, _, t, _ in subset for e in (h, t)}
    text = dict(entities)
    store.ensure_kg(kg)
    rel_idx, _ = store.write_relations(kg, [Relation.named(kg, r) for r in sorted({r for _, r, _, _ in triplets})])
    start = time.perf_counter()
    with store.driver.session(database=store.database) as session:
        for i, e in enumerate(sorted(needed)):
            session.run("MERGE (e:Entity {kg: $kg, id: $id}) ON CREATE SET e.idx = $i, e.modality = 'text', e.text = $text",
                        kg=kg, id=e, i=i, text=text[e]).consume()
        for h, r, t, split in subset:
            session.run("MATCH (h:Entity {kg: $kg, id: $h}) MATCH (t:Entity {kg: $kg, id: $t}) "
                        "MERGE (h)-[:TRIPLET {kg: $kg, rel: $r, split: $s}]->(t)",
                        kg=kg, h=h, t=t, r=rel_idx[r], s=split).consume()
    return (time.perf_counter() - start) / n


def bench_bulk(store, entities, triplets, kg: str, workdir: Path) -> float:
    rel_names = sorted({r for _, r, _, _ in triplets})
    with open(workdir / "entities.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "idx", "text"])
        w.writerows((e, i, text) for i, (e, text) in enumerate(entities))
    with open(workdir / "triplets.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["h", "r", "t", "split"])
        w.writerows((h, rel_names.index(r), t, s) for h, r, t, s in triplets)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(workdir)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    store.ensure_kg(kg)
    store.write_relations(kg, [Relation.named(kg, r) for r in rel_names])
    start = time.perf_counter()
    with store.driver.session(database=store.database) as session:
        session.run("LOAD CSV WITH HEADERS FROM $url AS row CALL (row) { CREATE (e:Entity {kg: $kg, id: row.id, "
                    "idx: toInteger(row.idx), modality: 'text', text: row.text}) } IN TRANSACTIONS OF 10000 ROWS",
                    url=f"{base}/entities.csv", kg=kg).consume()
        session.run("LOAD CSV WITH HEADERS FROM $url AS row CALL (row) { MATCH (h:Entity {kg: $kg, id: row.h}) "
                    "MATCH (t:Entity {kg: $kg, id: row.t}) CREATE (h)-[:TRIPLET {kg: $kg, rel: toInteger(row.r), "
                    "split: row.split}]->(t) } IN TRANSACTIONS OF 10000 ROWS",
                    url=f"{base}/triplets.csv", kg=kg).consume()
    seconds = time.perf_counter() - start
    server.shutdown()
    return seconds


@contextmanager
def throwaway_neo4j(settings: Settings, **overrides) -> Iterator[Settings]:
    """Settings of an empty local Neo4j on a free port, stopped and deleted afterwards
    (``overrides``: other settings of it, e.g. a throwaway ``home`` for runs and the registry)."""
    from kclip.platform import local_neo4j

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    state = Path(tempfile.mkdtemp(prefix="kclip-bench-neo4j-"))
    # The Neo4j jars are in the user's cache already: share it rather than download them again.
    fresh = load_settings(neo4j_uri=None, neo4j_state_dir=state, neo4j_bolt_port=port, cache_path=settings.cache_dir,
                          **overrides)
    local_neo4j.start(fresh)
    try:
        yield fresh
    finally:
        local_neo4j.stop(fresh)
        shutil.rmtree(state, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wn18rr", type=Path, default=DEFAULT_WN18RR)
    parser.add_argument("--naive-triplets", type=int, default=3000)
    parser.add_argument("--fresh-database", action="store_true", help="run on a throwaway empty local Neo4j")
    args = parser.parse_args()
    if args.fresh_database:
        with throwaway_neo4j(get_settings()) as settings:
            run(args, settings)
    else:
        run(args, get_settings())


def run(args: argparse.Namespace, settings: Settings) -> None:
    entities, triplets = read_wn18rr(args.wn18rr)
    stamp = time.strftime("%H%M%S")
    names = {k: f"bench-{stamp}-{k}" for k in ("kclip", "naive", "bulk")}
    with open_graph_store(settings) as store, tempfile.TemporaryDirectory() as tmp:
        store.ensure_schema()
        others = store.list_kgs()
        try:
            kclip_s = bench_kclip(store, args.wn18rr, names["kclip"], MediaStore(Path(tmp) / "media"))
            naive_per = bench_naive(store, entities, triplets, names["naive"], args.naive_triplets)
            bulk_s = bench_bulk(store, entities, triplets, names["bulk"], Path(tmp))
        finally:
            for name in names.values():
                store.drop_kg(name)
    n = len(triplets)
    kclip_rate, naive_rate, bulk_rate = n / kclip_s, 1 / naive_per, n / bulk_s
    print(f"WN18RR: {n:,} triplets, {len(entities):,} entities (Neo4j at {settings.bolt_uri}, "
          f"{len(others)} other KGs in it)")
    print(f"kclip load_kg    {kclip_s:7.2f} s  {kclip_rate:10,.0f} triplets/s  (end to end, entities included)")
    print(f"naive MERGE/row  {n * naive_per:7.2f} s* {naive_rate:10,.0f} triplets/s  (*extrapolated from {args.naive_triplets:,})")
    print(f"LOAD CSV bulk    {bulk_s:7.2f} s  {bulk_rate:10,.0f} triplets/s")
    print(f"kclip / naive  = {kclip_rate / naive_rate:6.1f}x   (target >= 20x)")
    print(f"bulk / kclip   = {bulk_rate / kclip_rate:6.2f}x   (target <= 3x)")
    print(f"kclip absolute = {kclip_rate:,.0f} triplets/s (target >= 50,000)")


if __name__ == "__main__":
    main()

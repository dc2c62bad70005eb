"""Loading KGs into a real Neo4j: idempotent, resumable, strict, KGs side by side."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kclip.kg_loaders.tsv import TsvLoader
from kclip.platform.errors import InputError, LoadRefused
from kclip.platform.ingest import load_kg

ODD_RELATIONS = ["/film/film/genre", "has part", "größer als", "関係", "it's \"quoted\"", "back`tick", "a\\b", "x) DETACH DELETE (n"]


def write_tsv(directory: Path, triplets: list[tuple[str, str, str]], entities: dict[str, str] | None = None,
              dev: list | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "train.tsv").write_text("".join(f"{h}\t{r}\t{t}\n" for h, r, t in triplets), encoding="utf-8")
    if dev:
        (directory / "dev.tsv").write_text("".join(f"{h}\t{r}\t{t}\n" for h, r, t in dev), encoding="utf-8")
    entities = entities or {e: f"text of {e}" for h, _, t in triplets + (dev or []) for e in (h, t)}
    (directory / "entity2text.txt").write_text("".join(f"{k}\t{v}\n" for k, v in entities.items()), encoding="utf-8")
    return directory


def snapshot(store, kg: str) -> dict:
    """Everything a refused load must not change."""
    stats = store.stats(kg)
    counters = store.run("MATCH (k:KG {name: $kg}) RETURN k.next_entity_idx AS e, k.next_relation_idx AS r", kg=kg)
    return {"kgs": store.list_kgs(), "entities": stats.entities, "triplets": stats.triplets,
            "relations": store.relations(kg), "counters": [dict(r) for r in counters]}


@pytest.fixture
def small_kg(tmp_path) -> Path:
    return write_tsv(tmp_path / "small", [("a", "likes", "b"), ("b", "likes", "c"), ("c", "hates", "a")],
                     dev=[("a", "hates", "c")])


def test_loading_twice_changes_nothing(graph_store, media_store, kg_name, small_kg):
    first = load_kg(graph_store, TsvLoader(small_kg, kg=kg_name), media_store, progress=False)
    assert (first.entities.added, first.relations.added, first.triplets.added) == (3, 2, 4)
    before = snapshot(graph_store, kg_name)
    again = load_kg(graph_store, TsvLoader(small_kg, kg=kg_name), media_store, progress=False)
    assert (again.entities.added, again.relations.added, again.triplets.added) == (0, 0, 0)
    assert (again.entities.present, again.relations.present, again.triplets.present) == (3, 2, 4)
    after = snapshot(graph_store, kg_name)
    assert {k: v for k, v in after.items() if k != "counters"} == {k: v for k, v in before.items() if k != "counters"}
    assert graph_store.stats(kg_name).triplets == {"train": 3, "dev": 1, "test": 0}


def test_two_kgs_live_side_by_side(graph_store, media_store, kg_name, small_kg, tmp_path):
    other = kg_name + "-b"
    load_kg(graph_store, TsvLoader(small_kg, kg=kg_name), media_store, progress=False)
    bigger = write_tsv(tmp_path / "bigger", [("a", "likes", "b"), ("a", "likes", "d"), ("d", "knows", "e")])
    load_kg(graph_store, TsvLoader(bigger, kg=other), media_store, progress=False)
    assert graph_store.stats(kg_name).total_entities == 3 and graph_store.stats(kg_name).total_triplets == 4
    assert graph_store.stats(other).total_entities == 4 and graph_store.stats(other).total_triplets == 3
    assert [e.other.id for e in graph_store.entity_triplets(kg_name, "a") if e.outgoing] != []
    assert {e.other.id for e in graph_store.entity_triplets(other, "a")} == {"b", "d"}  # never a's of the other KG
    graph_store.drop_kg(kg_name)
    assert kg_name not in graph_store.list_kgs()
    assert graph_store.stats(other).total_triplets == 3


def test_odd_relation_names_round_trip_exactly(graph_store, media_store, kg_name, tmp_path):
    triplets = [("a", name, "b") for name in ODD_RELATIONS]
    load_kg(graph_store, TsvLoader(write_tsv(tmp_path / "odd", triplets), kg=kg_name), media_store, progress=False)
    assert sorted(r.name for r in graph_store.relations(kg_name)) == sorted(ODD_RELATIONS)
    assert graph_store.stats(kg_name).triplets["train"] == len(ODD_RELATIONS)
    assert {e.relation for e in graph_store.entity_triplets(kg_name, "a")} == set(ODD_RELATIONS)


BAD_INPUTS = {
    "malformed line": (b"a\tlikes\tb\nc\tlikes\n", "train.tsv:2", "expected 3 tab-separated fields"),
    "unknown entity": (b"a\tlikes\tb\na\tlikes\tzzz\n", "train.tsv:2", "unknown entity 'zzz'"),
    "invalid UTF-8": (b"a\tlikes\tb\na\tlik\xff\xfees\tb\n", "train.tsv:2", "invalid UTF-8"),
    "empty file": (b"", "train.tsv", "empty file"),
    "control character": (b"a\tli\x07kes\tb\n", "train.tsv:1", "control character"),
}


@pytest.mark.parametrize("kind", list(BAD_INPUTS))
def test_bad_input_is_refused_and_the_graph_is_left_as_it_was(graph_store, media_store, kg_name, small_kg,
                                                              tmp_path, kind):
    load_kg(graph_store, TsvLoader(small_kg, kg=kg_name), media_store, progress=False)
    before = snapshot(graph_store, kg_name)
    content, where, problem = BAD_INPUTS[kind]
    bad = write_tsv(tmp_path / "bad", [("a", "likes", "b"), ("a", "new-relation", "new-entity")],
                    entities={"a": "A", "b": "B", "new-entity": "N"})
    (bad / "train.tsv").write_bytes(content)
    with pytest.raises((LoadRefused, InputError)) as caught:
        load_kg(graph_store, TsvLoader(bad, kg=kg_name), media_store, progress=False)
    assert where in str(caught.value) and problem in str(caught.value)
    assert snapshot(graph_store, kg_name) == before


def test_a_refused_load_of_a_new_kg_creates_nothing(graph_store, media_store, kg_name, tmp_path):
    bad = write_tsv(tmp_path / "bad", [("a", "likes", "b")])
    (bad / "train.tsv").write_text("a\tlikes\tb\na\tlikes\tnobody\n")
    with pytest.raises(LoadRefused):
        load_kg(graph_store, TsvLoader(bad, kg=kg_name), media_store, progress=False)
    assert kg_name not in graph_store.list_kgs()
    assert graph_store.stats(kg_name).total_entities == 0


def test_skip_bad_loads_the_rest_and_writes_a_rejects_report(graph_store, media_store, kg_name, tmp_path):
    bad = write_tsv(tmp_path / "bad", [("a", "likes", "b")], entities={"a": "A", "b": "B", "c": "C"})
    (bad / "train.tsv").write_bytes(b"a\tlikes\tb\nbroken line\nb\tlikes\tnobody\n\xff\n c \tlikes\ta\n")
    report = tmp_path / "rejects.tsv"
    summary = load_kg(graph_store, TsvLoader(bad, kg=kg_name), media_store, skip_bad=True, rejects_path=report,
                      progress=False)
    assert summary.triplets.added == 2 and summary.triplets.rejected == 1 and summary.unparsed_rows == 2
    rows = [line.split("\t") for line in report.read_text().splitlines()[1:]]
    assert [(Path(f).name, line) for f, line, _ in rows] == [("train.tsv", "2"), ("train.tsv", "4"), ("train.tsv", "3")]
    assert graph_store.stats(kg_name).triplets["train"] == 2


def _cli_env(settings) -> dict[str, str]:
    from kclip.platform.neo4j_client import _password

    return {**os.environ, "KCLIP_HOME": str(settings.home), "KCLIP_NEO4J_URI": settings.bolt_uri,
            "KCLIP_NEO4J_PASSWORD": _password(settings), "KCLIP_CACHE_DIR": str(settings.cache_dir)}


def test_a_load_killed_half_way_completes_when_run_again(graph_store, neo4j_settings, kg_name, wn18rr_dir):
    cmd = [sys.executable, "-m", "kclip", "load", "tsv", str(wn18rr_dir), "--kg", kg_name]
    proc = subprocess.Popen(cmd, env=_cli_env(neo4j_settings), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if graph_store.stats(kg_name).total_entities > 0:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = graph_store.stats(kg_name)
    assert partial.total_entities < 40943 or partial.total_triplets < 93003, "the kill must land mid-load"
    done = subprocess.run(cmd + ["--json"], env=_cli_env(neo4j_settings), capture_output=True, text=True, check=True)
    summary = json.loads(done.stdout[done.stdout.index("{"):])
    assert summary["entities"]["added"] + summary["entities"]["present"] == 40943
    stats = graph_store.stats(kg_name)
    assert stats.entities == {"text": 40943}
    assert stats.triplets == {"train": 86835, "dev": 3034, "test": 3134}
    assert len(graph_store.relations(kg_name)) == 11
    idx = graph_store.run("MATCH (e:Entity {kg: $kg}) WHERE e.idx IS NOT NULL RETURN count(DISTINCT e.idx) AS n", kg=kg_name)
    assert idx[0]["n"] == 40943  # every entity its own idx, even across the kill


def test_cli_refuses_bad_input_with_file_and_line(neo4j_settings, kg_name, tmp_path, monkeypatch):
    from kclip import cli

    bad = write_tsv(tmp_path / "bad", [("a", "likes", "b")])
    (bad / "train.tsv").write_text("a\tlikes\n")
    monkeypatch.setattr(cli, "get_settings", lambda: neo4j_settings)
    result = CliRunner().invoke(cli.app, ["load", "tsv", str(bad), "--kg", kg_name])
    assert result.exit_code != 0
    assert isinstance(result.exception, LoadRefused) and "train.tsv:1" in str(result.exception)
    ok = CliRunner().invoke(cli.app, ["stats", "--json"])
    assert ok.exit_code == 0 and kg_name not in json.loads(ok.output)


def test_a_load_warns_when_dev_triplets_are_also_in_train(graph_store, media_store, kg_name, tmp_path):
    train = [("a", "likes", "b"), ("b", "likes", "c")]
    data = write_tsv(tmp_path / "leaky", train, dev=[("a", "likes", "b"), ("c", "likes", "a")])
    summary = load_kg(graph_store, TsvLoader(data, kg_name), media_store, progress=False)
    assert summary.leaked == {"dev": 1}
    assert "1 dev triplet(s)" in summary.leak_warning() and f"kclip verify --kg {kg_name}" in summary.leak_warning()
    clean = load_kg(graph_store, TsvLoader(write_tsv(tmp_path / "clean", train), kg_name + "x"), media_store,
                    progress=False)
    assert clean.leaked == {} and clean.leak_warning() is None


def _conceptnet_gz(path: Path, lines: int, tail: bytes = b"") -> Path:
    import gzip

    rows = "".join(f"/a/[/r/IsA/,/c/en/w{i}/,/c/en/k{i}/]\t/r/IsA\t/c/en/w{i}\t/c/en/k{i}\t{{}}\n" for i in range(lines))
    path.write_bytes(gzip.compress(rows.encode() + tail))
    return path


def _count_entity_writes(store, monkeypatch, batch: int) -> list[int]:
    """The sizes of the entity batches written, in order; batches of ``batch`` rows."""
    from kclip.platform import ingest

    monkeypatch.setattr(ingest, "ENTITY_BATCH", batch)
    calls: list[int] = []
    original = store.write_entities

    def counted(kg, rows, fresh=False):
        calls.append(len(rows))
        return original(kg, rows, fresh=fresh)

    monkeypatch.setattr(store, "write_entities", counted)
    return calls


@pytest.mark.parametrize("failure", ["refused", "corrupt gzip"])
def test_a_new_kg_written_while_checking_is_removed_when_the_load_fails(graph_store, media_store, kg_name, tmp_path,
                                                                       monkeypatch, failure):
    from kclip.kg_loaders.conceptnet import ConceptNetLoader

    # 20,000 lines: over 1 MB, so the gzip stream is read in more than one block
    path = _conceptnet_gz(tmp_path / "assertions.csv.gz", 20_000, b"not an assertion\n" if failure == "refused" else b"")
    if failure == "corrupt gzip":
        path.write_bytes(path.read_bytes()[:-200])  # cut near the end: an error once most lines are read
    writes = _count_entity_writes(graph_store, monkeypatch, batch=2_000)
    with pytest.raises(LoadRefused if failure == "refused" else InputError):
        load_kg(graph_store, ConceptNetLoader(path, kg=kg_name), media_store, progress=False)
    assert sum(writes) >= 20_000  # a new KG: its entities were written before the input was all read
    assert kg_name not in graph_store.list_kgs() and graph_store.stats(kg_name).total_entities == 0


def test_a_refused_new_kg_removes_the_media_files_it_added_and_keeps_the_others(graph_store, media_store, kg_name,
                                                                                tmp_path, monkeypatch):
    from PIL import Image

    from kclip.kg_loaders.image_text import ImageTextLoader
    from test_regions import stored_files

    images = tmp_path / "images"
    images.mkdir()
    for name, colour in (("shared.jpg", "red"), ("own.jpg", "blue"), ("broken.jpg", "green")):
        Image.new("RGB", (64, 48), colour).save(images / name, comment=str(tmp_path).encode())
    (images / "broken.jpg").write_bytes((images / "broken.jpg").read_bytes()[:300])
    first = tmp_path / "first.csv"
    first.write_text("image,caption\nimages/shared.jpg,a red square\n", encoding="utf-8")
    other = f"{kg_name}-other"
    load_kg(graph_store, ImageTextLoader(first, kg=other), media_store, progress=False)
    before = {p: p.read_bytes() for p in stored_files(media_store)}
    other_before = snapshot(graph_store, other)
    second = tmp_path / "second.csv"
    second.write_text("image,caption\nimages/shared.jpg,red\nimages/own.jpg,blue\nimages/broken.jpg,green\n",
                      encoding="utf-8")
    writes = _count_entity_writes(graph_store, monkeypatch, batch=1)
    with pytest.raises(LoadRefused, match="broken.jpg"):
        load_kg(graph_store, ImageTextLoader(second, kg=kg_name), media_store, progress=False)
    assert len(writes) >= 2  # both good photos' entities were written (and own.jpg stored) while checking
    assert {p: p.read_bytes() for p in stored_files(media_store)} == before
    assert kg_name not in graph_store.list_kgs() and snapshot(graph_store, other) == other_before


def test_a_new_kg_that_cannot_be_removed_after_a_refusal_says_so(graph_store, media_store, kg_name, tmp_path,
                                                                monkeypatch, capsys):
    from kclip.kg_loaders.conceptnet import ConceptNetLoader
    from kclip.platform.errors import GraphStoreError

    path = _conceptnet_gz(tmp_path / "assertions.csv.gz", 100, b"not an assertion\n")
    _count_entity_writes(graph_store, monkeypatch, batch=10)

    def lost(kg, **_):
        raise GraphStoreError("Neo4j went away")

    monkeypatch.setattr(graph_store, "drop_kg", lost)
    with pytest.raises(LoadRefused, match="assertions.csv.gz:101"):
        load_kg(graph_store, ConceptNetLoader(path, kg=kg_name), media_store, progress=False)
    assert f"kclip drop --kg {kg_name} --yes" in capsys.readouterr().err
    monkeypatch.undo()
    graph_store.drop_kg(kg_name)

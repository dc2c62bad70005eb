"""ConceptNetLoader on tests/data/conceptnet: records, filters, gzip, bad rows; then loads into Neo4j."""

from __future__ import annotations

import gzip
import random
from collections import Counter
from pathlib import Path

import pytest

from kclip.kg_loaders.base import hashed_split, split_fields
from kclip.kg_loaders.conceptnet import FIELDS, ConceptNetLoader, _other_languages
from kclip.platform.errors import ConfigError, InputError, LoadRefused
from kclip.platform.ingest import load_kg
from kclip.platform.records import Entity, Reject, Relation, SourceRef, Triplet

DATA = Path(__file__).parents[1] / "data" / "conceptnet"
ASSERTIONS = DATA / "assertions.csv"
GOOD_LINE = ASSERTIONS.read_text(encoding="utf-8").splitlines()[0]


def records(path: Path, **options) -> list:
    return list(ConceptNetLoader(path, "cn", options).records())


def of(kind: type, recs: list) -> list:
    return [r for r in recs if isinstance(r, kind)]


def test_fixture_keeps_english_assertions_and_reduces_concepts():
    recs = records(ASSERTIONS)
    assert of(Reject, recs) == []
    entities = {e.id: e.text for e in of(Entity, recs)}
    assert entities == {"/c/en/cat": "cat", "/c/en/animal": "animal", "/c/en/ice_cream_shop": "ice cream shop",
                        "/c/en/dog": "dog", "/c/en/bark": "bark"}
    assert {r.name: r.text for r in of(Relation, recs)} == {
        "/r/IsA": "is a", "/r/AtLocation": "at location", "/r/CapableOf": "capable of", "/r/RelatedTo": "related to"}
    triplets = [(t.head, t.relation, t.tail) for t in of(Triplet, recs)]
    assert triplets == [("/c/en/cat", "/r/IsA", "/c/en/animal"), ("/c/en/cat", "/r/AtLocation", "/c/en/ice_cream_shop"),
                        ("/c/en/dog", "/r/CapableOf", "/c/en/bark"), ("/c/en/dog", "/r/RelatedTo", "/c/en/cat"),
                        ("/c/en/dog", "/r/IsA", "/c/en/animal")]
    assert {t.split for t in of(Triplet, recs)} == {"train"}
    assert of(Triplet, recs)[-1].source.line == 9


def test_entities_and_relations_come_once_before_their_first_triplet():
    seen: set[str] = set()
    for rec in records(ASSERTIONS):
        if isinstance(rec, Triplet):
            assert {rec.head, rec.tail, rec.relation} <= seen
        else:
            key = rec.id if isinstance(rec, Entity) else rec.name
            assert key not in seen
            seen.add(key)


def test_languages_and_min_weight_filter():
    both = records(ASSERTIONS, languages=["en", "fr"])
    assert both == records(ASSERTIONS, languages="en, fr")  # as `-o languages=en,fr` gives it
    assert {"/c/fr/chat", "/c/fr/animal"} <= {e.id for e in of(Entity, both)}
    assert len(of(Triplet, both)) == 7
    heavy = records(ASSERTIONS, min_weight=0.5)
    assert "/r/CapableOf" not in {t.relation for t in of(Triplet, heavy)}
    assert "/c/en/bark" not in {e.id for e in of(Entity, heavy)}


def test_gzip_gives_the_same_records_and_counts_compressed_bytes(tmp_path):
    packed = tmp_path / "assertions.csv.gz"
    packed.write_bytes(gzip.compress(ASSERTIONS.read_bytes()))
    loader = ConceptNetLoader(packed, "cn")
    recs = list(loader.records())
    assert [r.model_dump() for r in recs] == [r.model_dump() for r in records(ASSERTIONS)]
    assert loader.bytes_read == packed.stat().st_size
    plain = ConceptNetLoader(ASSERTIONS, "cn")
    list(plain.records())
    assert plain.bytes_read == ASSERTIONS.stat().st_size


def test_corrupt_gzip_is_an_input_error(tmp_path):
    packed = tmp_path / "assertions.csv.gz"
    packed.write_bytes(gzip.compress(ASSERTIONS.read_bytes() * 50)[:-40])
    with pytest.raises(InputError, match="corrupt gzip"):
        records(packed)


def test_split_ratios_are_deterministic_per_triplet():
    recs = of(Triplet, records(ASSERTIONS, split_ratios=[0.4, 0.3, 0.3]))
    for t in recs:
        assert t.split == hashed_split(f"{t.head}\t{t.relation}\t{t.tail}", (0.4, 0.3, 0.3))
    counts = Counter(hashed_split(str(i), (0.8, 0.1, 0.1)) for i in range(2000))
    assert 1500 < counts["train"] < 1700 and 120 < counts["dev"] < 280 and 120 < counts["test"] < 280


@pytest.mark.parametrize("ratios", [[0.5, 0.5, 0.5], [1.2, -0.1, -0.1], [0.5, 0.5]])
def test_bad_split_ratios_are_a_config_error(ratios):
    with pytest.raises(ConfigError, match="split_ratios"):
        ConceptNetLoader(ASSERTIONS, "cn", {"split_ratios": ratios})


@pytest.mark.parametrize("line, problem", [
    (b"/a/x\t/r/IsA\t/c/en/a\t/c/en/b", "expected 5 tab-separated fields"),
    (b"a/x\t/r/IsA\t/c/en/a\t/c/en/b\t{}", "assertion URI must start with /a/"),
    (b"/a/x\tIsA\t/c/en/a\t/c/en/b\t{}", "relation must be a /r/ URI"),
    (b"/a/x\t/r/IsA\t/x/en/a\t/c/en/b\t{}", "concept must be /c/LANG/TERM"),
    (b"/a/x\t/r/IsA\t/c/en\t/c/en/b\t{}", "concept must be /c/LANG/TERM"),
    (b"/a/x\t/r/IsA\t/c/en/a\t/c/en/b\t{weight: 1}", "invalid info JSON"),
    (b"/a/x\t/r/IsA\t/c/en/a\t/c/en/b\t[1]", "info must be a JSON object"),
    (b'/a/x\t/r/IsA\t/c/en/a\t/c/en/b\t{"weight": "heavy"}', "info weight must be a number"),
    (b"/a/x\t/r/IsA\t/c/en/caf\xe9\t/c/en/b\t{}", "invalid UTF-8"),
])
def test_bad_rows_are_rejected_naming_file_and_line(tmp_path, line, problem):
    path = tmp_path / "assertions.csv"
    path.write_bytes(GOOD_LINE.encode() + b"\n" + line + b"\n")
    recs = records(path)
    [reject] = of(Reject, recs)
    assert problem in reject.problem
    assert str(reject.source) == f"{path}:2"
    assert len(of(Triplet, recs)) == 1


def test_skipped_relations_are_not_rejected():
    recs = records(ASSERTIONS, languages=["en"])
    assert not any(r.relation in ("/r/ExternalURL", "/r/dbpedia/genre") for r in of(Triplet, recs))
    assert of(Reject, recs) == []


def _hostile_lines() -> list[bytes]:
    """Lines near the edges of what the quick skip test accepts, with every language pairing."""
    rng = random.Random(0)
    # field -> (well-formed values, odd ones); each field is odd one time in four
    pieces = {
        "uri": ([b"/a/[x]"], [b"a/x", b" /a/x", b""]),
        "relation": ([b"/r/IsA", b"/r/ExternalURL", b"/r/dbpedia/genre"], [b"/r/", b"/r/ ", b"IsA", b" /r/IsA"]),
        "concept": ([b"/c/en/cat", b"/c/en/cat/n", b" /c/de/katze", b"/c/fr/chat"],
                    [b"/c/en", b"/c/en/", b"/c//x", b"/c/en//x", b"/c/d e/x", b"\x0b/c/de/x", b"\xc2\xa0/c/de/x",
                     b"/x/en/a", b"http://example.org", b"/c/enx/a", b"", b" "]),
        "info": ([b"{}", b'{"weight": 0.5}'], [b"", b" ", b"{weight: 1}", b"[1]", b"\xc2\xa0"]),
    }
    lines = []
    for _ in range(4000):
        fields = [rng.choice(pieces[name][rng.random() < 0.25])
                  for name in ("uri", "relation", "concept", "concept", "info")]
        extra = rng.choice([[], [], [], [b"x"]])
        lines.append(b"\t".join(fields[: rng.choice([5, 5, 5, 4])] + extra) + rng.choice([b"\n", b"\r\n", b""]))
    return lines


@pytest.mark.parametrize("languages", [["en"], ["en", "fr"], ["de"]])
def test_the_quick_skip_only_drops_lines_the_full_parse_skips(tmp_path, languages):
    # The raw-bytes test passes over ~90% of the real file unread: it must never hide a line the
    # full parse would keep or reject (otherwise a bad row would load silently).
    skip = _other_languages(set(languages))
    lines = _hostile_lines() + ASSERTIONS.read_bytes().splitlines(keepends=True)
    path = tmp_path / "assertions.csv"
    path.write_bytes(GOOD_LINE.encode() + b"\n")
    loader = ConceptNetLoader(path, "cn", {"languages": languages})
    skipped = 0
    for line in lines:
        if skip(line):
            skipped += 1
            fields = split_fields(SourceRef("f", 1), line.decode("utf-8").rstrip("\r\n"), FIELDS)
            assert not isinstance(fields, Reject), line
            assert loader._assertion(SourceRef("f", 1), fields, set(languages)) is None, line
    assert skipped > 100  # the test does skip, else this proves nothing


@pytest.mark.parametrize("content", [b"", b"\n  \n"])
def test_empty_file_is_an_input_error(tmp_path, content):
    path = tmp_path / "assertions.csv"
    path.write_bytes(content)
    with pytest.raises(InputError, match="empty file") as err:
        records(path)
    assert err.value.path == str(path)


def test_directory_is_an_input_error():
    with pytest.raises(InputError, match="not a file"):
        records(DATA)


# -- against a real Neo4j (fixtures from tests/conftest.py) -------------------------------------

def test_load_stats_and_idempotence(graph_store, media_store, kg_name):
    loader = ConceptNetLoader(ASSERTIONS, kg_name)
    summary = load_kg(graph_store, loader, media_store, progress=False)
    assert (summary.entities.added, summary.relations.added, summary.triplets.added) == (5, 4, 5)
    stats = graph_store.stats(kg_name)
    assert (stats.entities, stats.relations, stats.triplets) == ({"text": 5}, 4, {"train": 5, "dev": 0, "test": 0})
    again = load_kg(graph_store, ConceptNetLoader(ASSERTIONS, kg_name), media_store, progress=False)
    assert again.triplets.added == 0 and again.entities.added == 0
    assert graph_store.stats(kg_name) == stats
    names = {r.name for r in graph_store.relations(kg_name)}
    assert names == {"/r/IsA", "/r/AtLocation", "/r/CapableOf", "/r/RelatedTo"}


def test_bad_row_refuses_strict_load_and_skip_bad_loads_the_rest(graph_store, media_store, kg_name, tmp_path):
    path = tmp_path / "assertions.csv"
    path.write_bytes(ASSERTIONS.read_bytes() + b"/a/x\t/r/IsA\t/c/en/a\n")
    before = graph_store.stats(kg_name)
    with pytest.raises(LoadRefused, match=f"{path}:10"):
        load_kg(graph_store, ConceptNetLoader(path, kg_name), media_store, progress=False)
    assert graph_store.stats(kg_name) == before
    rejects = tmp_path / "rejects.tsv"
    summary = load_kg(graph_store, ConceptNetLoader(path, kg_name), media_store, skip_bad=True,
                      rejects_path=rejects, progress=False)
    assert summary.unparsed_rows == 1 and summary.rejects_path == rejects
    assert f"{path}\t10\t" in rejects.read_text(encoding="utf-8")
    assert graph_store.stats(kg_name).triplets["train"] == 5

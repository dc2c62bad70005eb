"""Entity search (kclip issue 9): per KG inside the index, every match counted and reachable by
paging, the last word as a prefix, Lucene syntax taken literally, ids findable, old databases
migrated; and `kclip search`. All against the session's real Neo4j.

The oracle is Cypher, independent of Lucene: an entity matches a word when its text or its id
holds that word as a whole token, case-insensitively; a token being a run of letters, digits and
underscores that ``.``, ``'`` or ``:`` between two letters do not break (Unicode word breaks, as
the index's analyser cuts words: "a.m." is one token). A prefix matches a token's start.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kclip.kg_loaders.tsv import TsvLoader
from kclip.platform import cypher
from kclip.platform.errors import GraphStoreError
from kclip.platform.graph_store import GraphStore
from kclip.platform.ingest import load_kg
from kclip.platform.media import MediaStore

WN = "srch-wn"  # every WN18RR entity
WN_COPY = "srch-wn-copy"  # the first COPIED of them again: a name sharing tokens ("srch", "wn"), the same texts
COPIED = 5_000
ODD = "srch odd"  # small hand-made entities: prefixes, ranking, Lucene syntax, ids
ODD_ENTITIES = {
    "name:circle": "circle",
    "name:circles": "circles",
    "name:circular": "circular shape",
    "name:semicircle": "semicircle",
    "object:1": "red circle",
    "object:12": "red circles",
    "object:13": "blue circle",
    "caption:1": "a circle or a square",
    "caption:2": "not AND (x) title:foo c++",
    "caption:3": "rise at 7 a.m. daily",
    "image:1": None,  # image entities have no text: their id is what they are known by
    "image:2": None,
}
_LETTERS = r"[\p{L}\p{N}_]"
_BEFORE_TOKEN = rf"(?<!{_LETTERS})(?<!\p{{L}}[.':])"


# -- the oracle --------------------------------------------------------------------------------

def oracle_ids(store: GraphStore, kg: str, words: list[str], last_as_prefix: bool = True) -> set[str]:
    """Entities of ``kg`` whose text or id holds every word (the last as a prefix when asked)."""
    patterns = [_token(w) for w in words[:-1]] + [_prefix(words[-1]) if last_as_prefix else _token(words[-1])]
    rows = store.run("MATCH (e:Entity {kg: $kg}) WHERE e.idx IS NOT NULL "
                     "AND all(p IN $patterns WHERE coalesce(e.text, '') =~ p OR e.id =~ p) RETURN e.id AS id",
                     kg=kg, patterns=patterns)
    return {r["id"] for r in rows}


def _token(word: str) -> str:
    return f"(?is).*{_BEFORE_TOKEN}{re.escape(word)}(?!{_LETTERS})(?![.':]\\p{{L}}).*"


def _prefix(word: str) -> str:
    return f"(?is).*{_BEFORE_TOKEN}{re.escape(word)}.*"


def all_pages(store: GraphStore, kg: str, text: str, per_page: int) -> tuple[list[str], list[float], int]:
    """Every match's id and score, page after page; and the total each page reported."""
    ids, scores, totals = [], [], set()
    while True:
        page = store.search_entities(kg, text, limit=per_page, skip=len(ids))
        totals.add(page.total)
        ids += [row.id for row, _ in page.hits]
        scores += [score for _, score in page.hits]
        if len(page.hits) < per_page:
            assert len(totals) == 1, totals
            return ids, scores, totals.pop()


# -- fixtures ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def kgs(graph_store: GraphStore, wn18rr_dir: Path, tmp_path_factory) -> GraphStore:
    """WN (loaded as `kclip load` does), WN_COPY and ODD (written by the entity writer directly)."""
    lines = [line for line in (wn18rr_dir / "entity2text.txt").read_text(encoding="utf-8").splitlines() if line]
    if WN not in graph_store.list_kgs():
        data = tmp_path_factory.mktemp("wn-entities")
        (data / "entity2text.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        first, second = (line.split("\t", 1)[0] for line in lines[:2])
        (data / "train.tsv").write_text(f"{first}\t_hypernym\t{second}\n", encoding="utf-8")
        media = MediaStore(tmp_path_factory.mktemp("search-media"))
        load_kg(graph_store, TsvLoader(data, kg=WN), media, progress=False)
    copied = (line.split("\t", 1) for line in lines[:COPIED])
    rows = [{"id": i, "props": {"modality": "text", "text": t}} for i, t in copied]
    write_entities(graph_store, WN_COPY, rows)
    write_entities(graph_store, ODD, [{"id": i, "props": {"modality": "image" if t is None else "text"}
                                       | ({"text": t} if t else {})} for i, t in ODD_ENTITIES.items()])
    return graph_store


def write_entities(store: GraphStore, kg: str, rows: list[dict]) -> None:
    store.ensure_kg(kg)
    for start in range(0, len(rows), 5000):
        store.write_entities(kg, rows[start:start + 5000])


# -- per KG, every match ---------------------------------------------------------------------------

@pytest.mark.parametrize("kg", [WN, WN_COPY])
@pytest.mark.parametrize("word", ["genus", "circle", "a.m"])
def test_every_match_of_the_kg_is_counted_and_reachable_page_by_page(kgs, kg, word):
    ids, scores, total = all_pages(kgs, kg, word, per_page=400)
    expected = oracle_ids(kgs, kg, [word])
    assert total == len(ids) == len(set(ids)) == len(expected)
    assert set(ids) == expected
    exact = oracle_ids(kgs, kg, [word], last_as_prefix=False)
    # Whole-word matches first, each tier best first.
    assert set(ids[:len(exact)]) == exact
    for tier in (scores[:len(exact)], scores[len(exact):]):
        assert tier == sorted(tier, reverse=True)


def test_genus_finds_thousands_in_wn18rr_and_only_its_own_in_the_copy(kgs):
    whole = kgs.search_entities(WN, "genus", limit=20, skip=40)
    copy = kgs.search_entities(WN_COPY, "genus", limit=20)
    assert whole.total > 2_700 and len(whole.hits) == 20 and whole.skip == 40
    assert 0 < copy.total < whole.total
    copy_ids = {r["id"] for r in kgs.run("MATCH (e:Entity {kg: $kg}) RETURN e.id AS id", kg=WN_COPY)}
    assert set(all_pages(kgs, WN_COPY, "genus", 500)[0]) <= copy_ids


def test_kg_keys_are_one_token_and_differ_for_names_that_share_tokens():
    keys = {cypher.search_key(name) for name in ("wn", "wn-copy", "wn copy", "WN", "wn_copy")}
    assert len(keys) == 5
    assert all(re.fullmatch(r"k[0-9a-f]{32}", key) for key in keys)


# -- prefix, AND, ranking ---------------------------------------------------------------------------

def test_the_last_word_matches_as_a_prefix(kgs):
    page = kgs.search_entities(ODD, "circ", limit=50)
    assert {row.id for row, _ in page.hits} == oracle_ids(kgs, ODD, ["circ"]) == {
        "name:circle", "name:circles", "name:circular", "object:1", "object:12", "object:13", "caption:1"}
    assert "name:semicircle" not in {row.id for row, _ in page.hits}  # a prefix starts a word
    ids, _, total = all_pages(kgs, WN, "circ", per_page=100)
    assert total == len(ids) == len(oracle_ids(kgs, WN, ["circ"])) > 100


def test_tied_matches_come_shorter_text_first_then_by_id(kgs):
    # Lucene's own order of ties changes as other KGs write to the shared index; up to
    # SORTED_SEARCH_MAX matches, ties are ordered by the entity's text length, then its id.
    for kg, word in ((ODD, "circ"), (WN, "circ")):
        hits = kgs.search_entities(kg, word, limit=100).hits
        keys = [(-score, len(row.text or row.id), row.id) for row, score in hits]
        exact = [row.text and "circ" in row.text.lower().split() for row, _ in hits]
        assert not any(exact)  # all prefix matches: one ordered set
        assert keys == sorted(keys), kg


def test_every_word_must_match(kgs):
    found = {row.id for row, _ in kgs.search_entities(ODD, "red circ", limit=50).hits}
    assert found == oracle_ids(kgs, ODD, ["red", "circ"]) == {"object:1", "object:12"}
    assert kgs.search_entities(ODD, "blue square", limit=50).total == 0
    ids, _, total = all_pages(kgs, WN, "genus fal", per_page=100)
    assert set(ids) == oracle_ids(kgs, WN, ["genus", "fal"]) and total == len(ids) > 0


def test_whole_word_matches_rank_above_prefix_matches(kgs):
    ids = [row.id for row, _ in kgs.search_entities(ODD, "circle", limit=50).hits]
    whole = {"name:circle", "object:1", "object:13", "caption:1"}
    assert set(ids[:4]) == whole and set(ids[4:]) == {"name:circles", "object:12"}
    ids = [row.id for row, _ in kgs.search_entities(ODD, "red circle", limit=50).hits]
    assert ids == ["object:1", "object:12"]


# -- literal input, long input --------------------------------------------------------------------

CIRCLE_WORD = {"name:circle", "name:circles", "object:1", "object:12", "object:13", "caption:1"}


@pytest.mark.parametrize("text, expected", [
    ("AND", {"caption:2"}),  # an operator is a word like any other
    ("not AND (x)", {"caption:2"}),
    ("circle OR square", {"caption:1"}),
    ("title:foo", {"caption:2"}),  # not a field
    ("title:*", {"caption:2"}),  # "title:foo" is one token, and this its start
    ("{x}", {"caption:2"}),
    ("-circle", CIRCLE_WORD),  # not an exclusion
    ("/circle/", CIRCLE_WORD),  # not a regular expression
    ("circle~2", set()),  # not a fuzzy query: the words "circle" and "2" side by side
    ("[a TO b]", set()),  # not a range
    ("a.m.", {"caption:3"}),
])
def test_lucene_syntax_is_taken_literally(kgs, text, expected):
    page = kgs.search_entities(ODD, text, limit=50)
    assert {row.id for row, _ in page.hits} == expected and page.total == len(expected)


@pytest.mark.parametrize("text", ['"', "\\", "*", "?", "&& || !", "^", "~", ":", "(", ")", "-", "+", "/", "😀",
                                  "→ ← ·", "   "])
def test_words_without_a_letter_or_digit_find_nothing_and_never_fail(kgs, text):
    page = kgs.search_entities(ODD, text, limit=10)
    assert (page.total, page.hits) == (0, [])


def test_a_2000_word_query_is_cut_with_a_note(kgs):
    page = kgs.search_entities(WN, " ".join(["genus"] * 2000), limit=5)
    assert page.words == cypher.MAX_SEARCH_WORDS and page.given == 2000
    assert page.note == "searched the first 64 of 2,000 words (a search takes at most 64)"
    assert page.total == len(oracle_ids(kgs, WN, ["genus"]))
    many = kgs.search_entities(WN, " ".join(f"w{i}" for i in range(2000)), limit=5)
    assert many.total == 0 and many.note
    long_word = kgs.search_entities(WN, "-".join(["genus"] * 5000), limit=5)  # one word, 5,000 tokens
    assert long_word.note is None


# -- ids ------------------------------------------------------------------------------------------

def test_entities_are_found_by_their_id(kgs):
    def found(text: str) -> set[str]:
        return {row.id for row, _ in kgs.search_entities(ODD, text, limit=50).hits}

    assert found("image:1") == {"image:1"}  # no text at all
    assert found("image") == {"image:1", "image:2"}
    assert found("object:1") == {"object:1", "object:12", "object:13"}  # as typed: object:1 first
    assert [row.id for row, _ in kgs.search_entities(ODD, "object:1", limit=1).hits] == ["object:1"]
    assert found("name:circ") == {"name:circle", "name:circles", "name:circular"}  # one token to the analyser
    wn_id = kgs.run("MATCH (e:Entity {kg: $kg}) RETURN e.id AS id ORDER BY e.idx LIMIT 1", kg=WN)[0]["id"]
    assert [row.id for row, _ in kgs.search_entities(WN, wn_id).hits] == [wn_id]
    ids, _, total = all_pages(kgs, WN, wn_id[:4], per_page=500)
    assert set(ids) == oracle_ids(kgs, WN, [wn_id[:4]]) and total == len(ids) > 1


# -- writers and migration --------------------------------------------------------------------------

def test_every_entity_writer_sets_the_kg_key(graph_store, media_store, kg_name, tmp_path):
    data = tmp_path / "kg"
    data.mkdir()
    (data / "train.tsv").write_text("a\tlikes\tb\n")
    (data / "entity2text.txt").write_text("a\tapple pie\nb\tbanana split\n")
    load_kg(graph_store, TsvLoader(data, kg=kg_name), media_store, progress=False)  # the CREATE path
    (data / "entity2text.txt").write_text("a\tapple pie\nb\tbanana split\nc\tcherry tart\n")
    (data / "train.tsv").write_text("a\tlikes\tb\nb\tlikes\tc\n")
    load_kg(graph_store, TsvLoader(data, kg=kg_name), media_store, progress=False)  # the MERGE path
    keys = graph_store.run("MATCH (e:Entity {kg: $kg}) RETURN collect(DISTINCT e.kg_key) AS keys, count(e) AS n",
                           kg=kg_name)[0]
    assert keys["keys"] == [cypher.search_key(kg_name)] and keys["n"] == 3
    assert graph_store.search_ready(kg_name)
    assert [row.id for row, _ in graph_store.search_entities(kg_name, "cher").hits] == ["c"]


def test_a_database_of_an_older_kclip_is_migrated_and_searchable_again(kgs, cli_env):
    old = "srch-old"
    write_entities(kgs, old, [{"id": f"o{i}", "props": {"modality": "text", "text": f"old genus {i}"}}
                              for i in range(12_000)])
    _make_old(kgs, old)
    assert not kgs.search_ready(old)
    with pytest.raises(GraphStoreError, match=r"cannot be searched yet.*`kclip search WORD --kg srch-old`"):
        kgs.search_entities(old, "genus")
    # A backfill cut short: some entities already carry the key; the migration finishes the rest.
    kgs.run("MATCH (e:Entity {kg: $kg}) WHERE e.idx < 3000 SET e.kg_key = $key", kg=old, key=cypher.search_key(old))
    done = _kclip(["search", "genus", "--kg", old, "--limit", "3", "--json"], cli_env)  # migrates once
    assert done.returncode == 0, done.stderr
    assert "updating Neo4j's search index" in done.stderr
    assert len(json.loads(done.stdout)) == 3
    assert kgs.search_ready(old) and kgs.search_ready(WN)
    assert kgs.search_entities(old, "genus").total == 12_000
    # Every other KG works again after the index was rebuilt, and a second ensure_schema keeps it.
    assert kgs.search_entities(WN, "genus").total == len(oracle_ids(kgs, WN, ["genus"]))
    index_id = _search_index(kgs)["id"]
    kgs.ensure_schema()
    assert _search_index(kgs)["id"] == index_id
    again = _kclip(["search", "genus", "--kg", old, "--json"], cli_env)
    assert "updating" not in again.stderr


def _make_old(store: GraphStore, kg: str) -> None:
    """The database as a kclip before per-KG search left it: the index over text alone, KG nodes
    without a search key, entities without kg_key."""
    store.run(f"DROP INDEX {cypher.SEARCH_INDEX}")
    store.run(f"CREATE FULLTEXT INDEX {cypher.SEARCH_INDEX} FOR (e:Entity) ON EACH [e.text]")
    store.run(cypher.AWAIT_INDEXES, seconds=300)
    store.run("MATCH (e:Entity {kg: $kg}) REMOVE e.kg_key", kg=kg)
    store.run("MATCH (k:KG {name: $kg}) REMOVE k.search_key", kg=kg)


def _search_index(store: GraphStore) -> dict:
    return store.run("SHOW FULLTEXT INDEXES YIELD id, name, properties WHERE name = $name RETURN id, properties",
                     name=cypher.SEARCH_INDEX)[0].data()


# -- kclip search ---------------------------------------------------------------------------------

def _kclip(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kclip", *args], env=env, capture_output=True, text=True, timeout=120)


def test_cli_search_prints_the_same_page_as_json(kgs, cli_env):
    done = _kclip(["search", "genus fal", "--kg", WN, "--limit", "5", "--skip", "2", "--json"], cli_env)
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    page = kgs.search_entities(WN, "genus fal", limit=5, skip=2)
    assert [p["id"] for p in printed] == [row.id for row, _ in page.hits] and len(printed) == 5
    assert set(printed[0]) == {"id", "text", "modality", "score"}
    assert [(p["text"], p["modality"]) for p in printed] == [(row.text, row.modality) for row, _ in page.hits]
    assert {p["id"] for p in printed} <= oracle_ids(kgs, WN, ["genus", "fal"])
    table = _kclip(["search", "genus", "--kg", WN, "--limit", "3", "--skip", "40"], cli_env)
    total = kgs.search_entities(WN, "genus", limit=1).total
    assert table.returncode == 0 and f"{WN}: matches 41-43 of {total:,} for 'genus'" in table.stdout


def test_cli_search_of_an_unknown_kg_fails_in_one_line(kgs, cli_env):
    done = _kclip(["search", "genus", "--kg", "no-such-kg", "--json"], cli_env)
    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no KG named 'no-such-kg'"), done.stderr


def test_cli_search_notes_a_cut_query(kgs, cli_env):
    done = _kclip(["search", " ".join(["genus"] * 2000), "--kg", WN, "--limit", "2", "--json"], cli_env)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)) == 2
    assert "searched the first 64 of 2,000 words" in done.stderr

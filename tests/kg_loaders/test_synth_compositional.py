"""The compositional scene set: deterministic files in the VG and ARO layouts, relations that hold
in the geometry and fail when swapped, none symmetric, false captions the text alone cannot spot,
and a KG that loads with exactly the ARO files' images in its test split."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from kclip.kg_loaders.base import hashed_split
from kclip.kg_loaders.synth_compositional import (ATTRIBUTION_FILE, PREDICATES, RELATION_FILE,
                                                  generate_compositional)
from kclip.kg_loaders.synth_scene_graphs import COLOURS, KINDS
from kclip.kg_loaders.visual_genome import VisualGenomeLoader
from kclip.platform.ingest import load_kg

IMAGES, SEED = 120, 5
ARO_KEYS = {"image_id", "image_path", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "true_caption", "false_caption"}
# Predicates whose swap keeps the meaning (or that ARO's notebook leaves out of its macro accuracy).
SYMMETRIC = {"next to", "near", "beside", "by", "with", "close to", "bigger than", "smaller than", "larger than"}
INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


@pytest.fixture(scope="module")
def comp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("comp") / "set"
    generate_compositional(out, images=IMAGES, seed=SEED)
    return out


def _json(root: Path, name: str):
    return json.loads((root / name).read_text(encoding="utf-8"))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _objects(root: Path) -> dict[tuple[int, str], dict]:
    """Every object by (image id, "the <colour> <kind>"), the way ARO captions name it."""
    return {(g["image_id"], f"the {o['attributes'][1]} {o['names'][0]}"): o
            for g in _json(root, "scene_graphs.json") for o in g["objects"]}


def _holds(predicate: str, a: dict, b: dict) -> bool:
    """Whether ``a <predicate> b`` holds for boxes, strictly: no pixel of one reaches the other."""
    return {"left of": a["x"] + a["w"] <= b["x"], "right of": b["x"] + b["w"] <= a["x"],
            "above": a["y"] + a["h"] <= b["y"], "below": b["y"] + b["h"] <= a["y"]}[predicate]


def _test_images(root: Path) -> set[int]:
    return {g["image_id"] for g in _json(root, "scene_graphs.json") if hashed_split(str(g["image_id"]),
                                                                                    (0.8, 0.1, 0.1)) == "test"}


# -- files -------------------------------------------------------------------------------------

def test_same_seed_same_bytes_other_seed_other_scenes(comp: Path, tmp_path: Path) -> None:
    generate_compositional(tmp_path / "again", images=IMAGES, seed=SEED)
    assert _files(tmp_path / "again") == _files(comp)
    generate_compositional(tmp_path / "other", images=IMAGES, seed=SEED + 1)
    assert _json(tmp_path / "other", "scene_graphs.json") != _json(comp, "scene_graphs.json")


def test_vg_layout_with_jpegs_and_binding_captions(comp: Path) -> None:
    graphs = _json(comp, "scene_graphs.json")
    assert [g["image_id"] for g in graphs] == list(range(1, IMAGES + 1))
    for data in _json(comp, "image_data.json"):
        with Image.open(comp / data["url"]) as img:
            assert (img.format, img.size) == ("JPEG", (224, 224)) == ("JPEG", (data["width"], data["height"]))
    for g in graphs:
        objects = g["objects"]
        assert 3 <= len(objects) <= 4
        assert len({o["names"][0] for o in objects}) == len({o["attributes"][1] for o in objects}) == len(objects)
        assert all(o["names"][0] in KINDS and o["attributes"][0] in ("small", "large")
                   and o["attributes"][1] in COLOURS for o in objects)
        sides = {o["attributes"][0]: o["w"] for o in objects}
        assert sides.get("large", 2 * sides.get("small", 1)) >= 1.8 * sides.get("small", 1)  # visibly different
    phrases = [r["phrase"] for e in _json(comp, "region_descriptions.json") for r in e["regions"]]
    assert sum(len(g["relationships"]) for g in graphs) + IMAGES == len(phrases)
    assert any(" left of " in p and p.startswith(("a small ", "a large ")) for p in phrases)
    captions = _json(comp, "captions.json")
    assert all((comp / "images" / i["file_name"]).is_file() for i in captions["images"])


def test_aro_files_in_aros_layout_for_the_test_images_only(comp: Path) -> None:
    relation, attribution = _json(comp, RELATION_FILE), _json(comp, ATTRIBUTION_FILE)
    assert relation and attribution
    assert all(set(i) == ARO_KEYS | {"relation_name"} for i in relation)
    assert all(set(i) == ARO_KEYS | {"attributes"} for i in attribution)
    for item in relation + attribution:
        # ARO's loader joins ROOT/images/<image_path> and crops (x, y, x + w, y + h).
        assert (comp / "images" / item["image_path"]).is_file()
        assert all(isinstance(item[k], int) and item[k] >= 0 for k in ("bbox_x", "bbox_y", "bbox_w", "bbox_h"))
        assert item["bbox_x"] + item["bbox_w"] <= 224 and item["bbox_y"] + item["bbox_h"] <= 224
    test = _test_images(comp)
    assert {i["image_id"] for i in relation} == {i["image_id"] for i in attribution} == test
    graphs = {g["image_id"]: g for g in _json(comp, "scene_graphs.json")}
    assert len(relation) == sum(len(graphs[i]["relationships"]) for i in test)
    pairs = sum(math.comb(len(graphs[i]["objects"]), 2) for i in test)
    size_pairs = sum(a["attributes"][0] != b["attributes"][0] for i in test for n, a in enumerate(graphs[i]["objects"])
                     for b in graphs[i]["objects"][n + 1:])
    assert len(attribution) == pairs + size_pairs


def test_true_captions_hold_false_ones_do_not_and_boxes_hold_both_objects(comp: Path) -> None:
    objects = _objects(comp)
    for item in _json(comp, RELATION_FILE):
        predicate = item["relation_name"]
        subject, obj = item["true_caption"].split(f" is {predicate} ")
        assert item["false_caption"] == f"{obj} is {predicate} {subject}"
        s, o = objects[(item["image_id"], subject)], objects[(item["image_id"], obj)]
        assert _holds(predicate, s, o) and not _holds(predicate, o, s)
        _assert_box_is_union(item, s, o)
    by_kind = {(image, key.split()[-1]): o for (image, key), o in objects.items()}
    for item in _json(comp, ATTRIBUTION_FILE):
        (a1, k1), (a2, k2) = (part.split()[1:] for part in item["true_caption"].split(" and "))
        assert item["attributes"] == [a1, a2] and item["false_caption"] == f"the {a2} {k1} and the {a1} {k2}"
        first, second = by_kind[(item["image_id"], k1)], by_kind[(item["image_id"], k2)]
        assert a1 in first["attributes"] and a2 in second["attributes"]
        assert a2 not in first["attributes"] and a1 not in second["attributes"]  # the swap is false
        _assert_box_is_union(item, first, second)


def _assert_box_is_union(item: dict, a: dict, b: dict) -> None:
    x0, y0 = min(a["x"], b["x"]), min(a["y"], b["y"])
    x1, y1 = max(a["x"] + a["w"], b["x"] + b["w"]), max(a["y"] + a["h"], b["y"] + b["h"])
    assert (item["bbox_x"], item["bbox_y"], item["bbox_w"], item["bbox_h"]) == (x0, y0, x1 - x0, y1 - y0)


def test_no_symmetric_relations(comp: Path) -> None:
    graphs = _json(comp, "scene_graphs.json")
    predicates = {r["predicate"] for g in graphs for r in g["relationships"]}
    assert predicates == set(PREDICATES) == set(INVERSE)
    assert not predicates & SYMMETRIC
    assert not {i["relation_name"] for i in _json(comp, RELATION_FILE)} & SYMMETRIC
    for g in graphs:
        stated = {(r["subject_id"], r["predicate"], r["object_id"]) for r in g["relationships"]}
        for s, p, o in stated:
            assert (o, p, s) not in stated  # antisymmetric: the swap is never also stated
            assert (o, INVERSE[p], s) not in stated  # each fact once, in one of its two directions


# -- plausibility from the text alone ------------------------------------------------------------

class BigramScorer:
    """log P(caption) under an add-one bigram model of some sentences: a text-only judge of word order."""

    def __init__(self, sentences: list[str]):
        self.bigrams = Counter(b for s in sentences for b in _bigrams(s))
        self.unigrams = Counter(w for s in sentences for w in ["<s>", *s.split()])
        self.vocabulary = len(self.unigrams) + 1

    def __call__(self, sentence: str) -> float:
        return sum(math.log((self.bigrams[(a, b)] + 1) / (self.unigrams[a] + self.vocabulary))
                   for a, b in _bigrams(sentence))


class PositionScorer:
    """log P(caption) with each word drawn at its position (add-one): a text-only judge of which
    words come first, blind to bigrams but not to long-range priors ("the large ... is bigger")."""

    def __init__(self, sentences: list[str]):
        self.counts = Counter((n, w) for s in sentences for n, w in enumerate(s.split()))
        self.totals = Counter(n for s in sentences for n in range(len(s.split())))
        self.vocabulary = len({w for s in sentences for w in s.split()}) + 1

    def __call__(self, sentence: str) -> float:
        return sum(math.log((self.counts[(n, w)] + 1) / (self.totals[n] + self.vocabulary))
                   for n, w in enumerate(sentence.split()))


def _bigrams(sentence: str) -> list[tuple[str, str]]:
    words = ["<s>", *sentence.split(), "</s>"]
    return list(zip(words, words[1:]))


def _train_sentences(root: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """The training images' facts in the ARO templates (the strongest text prior one could learn),
    their region captions, and a control: size comparisons that name the sizes, (true, false)."""
    test, sentences, control = _test_images(root), [], []
    for g in _json(root, "scene_graphs.json"):
        if g["image_id"] in test:
            continue
        obj = {o["object_id"]: o for o in g["objects"]}
        name = {i: f"the {o['attributes'][1]} {o['names'][0]}" for i, o in obj.items()}
        for r in g["relationships"]:
            sentences.append(f"{name[r['subject_id']]} is {r['predicate']} {name[r['object_id']]}")
        for n, a in enumerate(g["objects"]):
            for b in g["objects"][n + 1:]:
                sentences.append(f"{name[a['object_id']]} and {name[b['object_id']]}")
                if a["attributes"][0] != b["attributes"][0]:
                    big, small = (a, b) if a["attributes"][0] == "large" else (b, a)
                    phrase = {o["object_id"]: f"the {' '.join(o['attributes'])} {o['names'][0]}" for o in (a, b)}
                    true = f"{phrase[big['object_id']]} is bigger than {phrase[small['object_id']]}"
                    false = f"{phrase[small['object_id']]} is bigger than {phrase[big['object_id']]}"
                    control.append((true, false))
    sentences += [r["phrase"] for e in _json(root, "region_descriptions.json") if e["id"] not in test
                  for r in e["regions"]]
    return sentences, control


def _accuracy(scorer, pairs: list[tuple[str, str]]) -> float:
    wins = [1.0 if scorer(t) > scorer(f) else 0.5 if scorer(t) == scorer(f) else 0.0 for t, f in pairs]
    return sum(wins) / len(wins)


def test_text_alone_cannot_tell_true_from_false_captions(tmp_path: Path) -> None:
    comp = tmp_path / "large"  # ~350 items per file: a 50% judge lands within 0.40-0.60
    generate_compositional(comp, images=600, seed=SEED)
    sentences, control = _train_sentences(comp)
    # The check can fail: where captions name sizes, "bigger than" is decided by the text alone
    # (the flaw of the old relation-swap test); held-out control pairs show it.
    seen, held_out = control[: len(control) // 2], control[len(control) // 2:]
    assert _accuracy(PositionScorer(sentences + [t for t, _ in seen]), held_out) > 0.9
    for name in (RELATION_FILE, ATTRIBUTION_FILE):
        items = _json(comp, name)
        assert all(sorted(i["true_caption"].split()) == sorted(i["false_caption"].split()) for i in items)
        pairs = [(i["true_caption"], i["false_caption"]) for i in items]
        for scorer in (BigramScorer(sentences), PositionScorer(sentences)):
            accuracy = _accuracy(scorer, pairs)
            print(f"{name}: {type(scorer).__name__} of the training captions picks the true caption "
                  f"{accuracy:.3f} of {len(items)} times")
            assert 0.4 <= accuracy <= 0.6, (name, type(scorer).__name__, accuracy)


# -- speed, the command, and loading -----------------------------------------------------------

def test_hundreds_of_images_in_seconds(tmp_path: Path) -> None:
    started = time.perf_counter()
    summary = generate_compositional(tmp_path, images=300, seed=0)
    seconds = time.perf_counter() - started
    print(f"300 compositional images in {seconds:.2f} s")
    assert summary.images == 300 and summary.relation_items > 0 and summary.attribution_items > 0
    assert seconds < 10.0  # ~1.5 s here; generous, the cores are shared


def test_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="images"):
        generate_compositional(tmp_path, images=0, seed=0)
    with pytest.raises(ValueError, match="image_size"):
        generate_compositional(tmp_path, images=1, seed=0, image_size=40)


def test_the_command_writes_the_same_files_without_torch(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KCLIP_")} | {"KCLIP_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "kclip", "synth", "compositional",
                           str(tmp_path / "cli"), "--images", "8", "--seed", "2"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "kclip load visual-genome" in done.stdout
    assert not re.search(r"\|\s+(torch|open_clip|dgl)(\.|$)", done.stderr, re.MULTILINE), "a light command imports torch"
    generate_compositional(tmp_path / "lib", images=8, seed=2)
    assert _files(tmp_path / "cli") == _files(tmp_path / "lib")


def test_loads_with_the_aro_images_as_its_test_split(comp: Path, graph_store, media_store, kg_name) -> None:
    summary = load_kg(graph_store, VisualGenomeLoader(comp, kg_name), media_store, progress=False)
    assert summary.entities.rejected == summary.triplets.rejected == summary.unparsed_rows == 0
    rows = graph_store.run(
        "MATCH (img:Entity {kg: $kg})<-[t:TRIPLET]-(:Entity {kg: $kg}), (r:Relation {kg: $kg, idx: t.rel}) "
        "WHERE r.name IN ['in image', 'caption of'] RETURN DISTINCT img.id AS image, t.split AS split",
        kg=kg_name)
    by_split = {(row["image"], row["split"]) for row in rows}
    test_images = {int(image.split(":")[1]) for image, split in by_split if split == "test"}
    relation, attribution = _json(comp, RELATION_FILE), _json(comp, ATTRIBUTION_FILE)
    assert test_images == {i["image_id"] for i in relation} == {i["image_id"] for i in attribution}
    assert len({image for image, _ in by_split}) == IMAGES
    spatial = graph_store.run(
        "MATCH (:Entity {kg: $kg})-[t:TRIPLET {split: 'test'}]->(:Entity {kg: $kg}), (r:Relation {kg: $kg, idx: t.rel}) "
        "WHERE r.name IN $predicates RETURN count(t) AS n", kg=kg_name, predicates=list(PREDICATES))
    assert spatial[0]["n"] == len(relation)

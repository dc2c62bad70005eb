"""ARO evaluation (models/aro.py): known answers on hand-made files in ARO's layout, one clear error
for hostile input, and a real tiny run trained on the compositional scene set, in-process and
through `kclip eval --task aro`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from kg_fixtures import kclip_json

from kclip.kg_loaders.synth_compositional import ATTRIBUTION_FILE, RELATION_FILE, generate_compositional
from kclip.kg_loaders.visual_genome import VisualGenomeLoader
from kclip.models.aro import evaluate_aro, read_aro_file, run_scorers, score_aro
from kclip.models.features import featurizer_for
from kclip.models.inference import LoadedRun, load_run
from kclip.models.knowledge_clip import KnowledgeCLIP, LossWeights, ModelConfig
from kclip.models.train import train
from kclip.models.train_config import load_train_config
from kclip.platform.errors import InputError
from kclip.platform.ingest import load_kg
from kclip.platform.media import MediaStore

RED, BLUE = (220, 40, 40), (40, 80, 220)


# -- hand-made files with known answers ----------------------------------------------------------

def _case(box: tuple[int, int, int, int], true: str, false: str, **fields) -> dict:
    x, y, w, h = box
    return {"image_path": "halves.png", "bbox_x": x, "bbox_y": y, "bbox_w": w, "bbox_h": h,
            "true_caption": true, "false_caption": false, **fields}


WHOLE, RIGHT_HALF = (0, 0, 100, 50), (50, 0, 50, 50)
RELATION_CASES = [  # what the colour scorer below answers: right, right (only if cropped), wrong
    _case(WHOLE, "the red square is left of the blue square", "the blue square is left of the red square",
          relation_name="left of"),
    _case(RIGHT_HALF, "the blue square is left of the red square", "the red square is left of the blue square",
          relation_name="left of"),
    _case(WHOLE, "the blue square is above the red square", "the red square is above the blue square",
          relation_name="above"),
]
ATTRIBUTION_CASES = [
    _case(WHOLE, "the red square and the blue circle", "the blue square and the red circle", attributes=["red", "blue"]),
    _case(RIGHT_HALF, "the blue circle and the red square", "the red circle and the blue square",
          attributes=["blue", "red"]),
]


@pytest.fixture
def aro_root(tmp_path: Path) -> Path:
    """ARO's layout: ROOT/visual_genome_*.json and ROOT/images/, one 100x50 image, red left, blue right."""
    root = tmp_path / "aro"
    (root / "images").mkdir(parents=True)
    pixels = np.zeros((50, 100, 3), dtype=np.uint8)
    pixels[:, :50], pixels[:, 50:] = RED, BLUE
    Image.fromarray(pixels).save(root / "images" / "halves.png")
    (root / RELATION_FILE).write_text(json.dumps(RELATION_CASES), encoding="utf-8")
    (root / ATTRIBUTION_FILE).write_text(json.dumps(ATTRIBUTION_CASES), encoding="utf-8")
    return root


def _first_colour(caption: str) -> str:
    return next(w for w in caption.split() if w in ("red", "blue"))


def _left_colour(crop: Image.Image) -> str:
    r, _, b = np.asarray(crop)[:, 0].mean(axis=0)
    return "red" if r > b else "blue"


def colour_scorer(crops, true, false):
    """1 for a caption whose first colour is the crop's left edge's, else 0: a scorer with known answers."""
    def fit(captions):
        return np.array([float(_first_colour(c) == _left_colour(i)) for i, c in zip(crops, captions)])
    return fit(true), fit(false)


def flipped_scorer(crops, true, false):
    t, f = colour_scorer(crops, true, false)
    return -t, -f


def tie_scorer(crops, true, false):
    return np.zeros(len(crops)), np.zeros(len(crops))


def test_known_answers_on_both_files(aro_root: Path) -> None:
    scorers = {"colour": colour_scorer, "flipped": flipped_scorer, "tie": tie_scorer}
    metrics = score_aro(scorers, aro_root, progress=False)
    assert metrics == pytest.approx({
        "chance": 0.5, "relation_items": 3, "attribute_items": 2,
        # relation: right, right, wrong -> 2/3; by relation name: left of 1.0, above 0.0 -> macro 0.5
        "colour_relation_accuracy": 2 / 3, "colour_relation_macro_accuracy": 0.5, "colour_attribute_accuracy": 1.0,
        "flipped_relation_accuracy": 1 / 3, "flipped_relation_macro_accuracy": 0.5, "flipped_attribute_accuracy": 0.0,
        "tie_relation_accuracy": 0.5, "tie_relation_macro_accuracy": 0.5, "tie_attribute_accuracy": 0.5,
    })


def test_one_file_a_limit_and_an_images_folder(aro_root: Path, tmp_path: Path) -> None:
    only = score_aro({"colour": colour_scorer}, aro_root / ATTRIBUTION_FILE, limit=1, progress=False)
    assert only == {"chance": 0.5, "attribute_items": 1.0, "colour_attribute_accuracy": 1.0}
    # Elsewhere, image paths are relative to --images; without it, to the file's folder.
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    (moved / RELATION_FILE).write_text((aro_root / RELATION_FILE).read_text())
    with pytest.raises(InputError, match="halves.png not found"):
        score_aro({"colour": colour_scorer}, moved / RELATION_FILE, progress=False)
    metrics = score_aro({"colour": colour_scorer}, moved / RELATION_FILE, images=aro_root / "images", progress=False)
    assert metrics["colour_relation_accuracy"] == pytest.approx(2 / 3)


# -- hostile input ---------------------------------------------------------------------------

def _write(root: Path, cases) -> Path:
    path = root / RELATION_FILE
    path.write_text(cases if isinstance(cases, str) else json.dumps(cases), encoding="utf-8")
    return path


@pytest.mark.parametrize("image_path, message", [
    ("../secret.png", "leaves the images folder"),
    ("/etc/passwd", "leaves the images folder"),
    ("link.png", "leaves the images folder"),  # a symlink inside pointing out
    ("missing.png", "missing.png not found"),
])
def test_image_paths_must_exist_inside_the_images_folder(aro_root: Path, image_path: str, message: str) -> None:
    (aro_root / "secret.png").write_bytes((aro_root / "images" / "halves.png").read_bytes())
    (aro_root / "images" / "link.png").symlink_to(aro_root / "secret.png")
    path = _write(aro_root, [RELATION_CASES[0], {**RELATION_CASES[1], "image_path": image_path}])
    with pytest.raises(InputError, match=message) as caught:
        read_aro_file(path)
    assert str(path) in str(caught.value) and "item 1" in str(caught.value)


@pytest.mark.parametrize("content, message", [
    ('[{"image_path": "halves.png",\n  "bbox_x": }]', r"relation.json:2: not valid JSON"),
    ('{"image_path": "halves.png"}', "expected a non-empty JSON array"),
    ("[]", "expected a non-empty JSON array"),
    ([RELATION_CASES[0], {k: v for k, v in RELATION_CASES[1].items() if k != "false_caption"}],
     "item 1: false_caption: Field required"),
    ([{**RELATION_CASES[0], "bbox_w": 0}], "item 0: bbox_w: Input should be greater than 0"),
    ([RELATION_CASES[0], ATTRIBUTION_CASES[0]], "item 1: not an ARO relation case"),
    ([{k: v for k, v in RELATION_CASES[0].items() if k != "relation_name"}], "item 0: neither an ARO relation"),
])
def test_broken_files_raise_one_clear_error(aro_root: Path, content, message: str) -> None:
    with pytest.raises(InputError, match=message):
        score_aro({"tie": tie_scorer}, _write(aro_root, content), progress=False)


def test_missing_data_and_unreadable_images(aro_root: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found: expected an ARO JSON file"):
        score_aro({"tie": tie_scorer}, tmp_path / "nope.json", progress=False)
    with pytest.raises(InputError, match="no ARO file here"):
        score_aro({"tie": tie_scorer}, aro_root / "images", progress=False)
    (aro_root / "images" / "halves.png").write_bytes(b"not an image")
    with pytest.raises(InputError, match="item 0: image .*halves.png unreadable"):
        score_aro({"tie": tie_scorer}, aro_root / RELATION_FILE, progress=False)


# -- a real run ------------------------------------------------------------------------------

SCENES, SEED, STEPS = 40, 11, 3


@pytest.fixture(scope="module")
def comp_run(neo4j_settings, graph_store, tmp_path_factory) -> tuple[str, Path]:
    """A tiny random-init run trained a few steps on the compositional scene set, and the set."""
    out = tmp_path_factory.mktemp("aro") / "comp"
    generate_compositional(out, images=SCENES, seed=SEED)
    kg = "aro-compositional"
    load_kg(graph_store, VisualGenomeLoader(out, kg=kg), MediaStore(neo4j_settings.media_root), progress=False)
    config = load_train_config("tiny", {"max_steps": STEPS, "data.num_workers": 0, "data.batch_size": 8, "seed": 0})
    return train(neo4j_settings, kg=kg, config=config, run_name="aro-tiny", device="cpu", progress=False), out


def test_a_trained_run_is_scored_both_ways(neo4j_settings, comp_run) -> None:
    name, out = comp_run
    run = load_run(neo4j_settings, name)
    metrics = evaluate_aro(run, out, progress=False)
    print(f"{name} ({STEPS} steps, {SCENES} scenes, seed {SEED}): {metrics}")
    relation = json.loads((out / RELATION_FILE).read_text())
    attribution = json.loads((out / ATTRIBUTION_FILE).read_text())
    assert metrics["relation_items"] == len(relation) and metrics["attribute_items"] == len(attribution)
    assert metrics["chance"] == 0.5
    for scorer in ("pooled", "fusion"):
        for test, n in (("relation", len(relation)), ("attribute", len(attribution))):
            accuracy = metrics[f"{scorer}_{test}_accuracy"]
            assert 0.0 <= accuracy <= 1.0 and (accuracy * n * 2) == pytest.approx(round(accuracy * n * 2))
        assert 0.0 <= metrics[f"{scorer}_relation_macro_accuracy"] <= 1.0
    assert evaluate_aro(run, out, progress=False) == metrics  # deterministic
    # The pooled scorer is plain CLIP: the model's own image-text similarity of the crops agrees.
    crops, true, false = _crops(out, relation[:6])
    similarity = run.model.text_image_similarity(run.featurizer.tokens(true + false),
                                                 torch.stack([run.featurizer.preprocess(c) for c in crops]))
    expected_true, expected_false = similarity[:6].diagonal(), similarity[6:].diagonal()
    got_true, got_false = run_scorers(run)["pooled"](crops, true, false)
    assert np.allclose(got_true, expected_true.detach().numpy(), atol=1e-5)
    assert np.allclose(got_false, expected_false.detach().numpy(), atol=1e-5)
    # The fusion scorer answers something else than the towers alone.
    fusion_true, _ = run_scorers(run)["fusion"](crops, true, false)
    assert not np.allclose(fusion_true, got_true, atol=1e-3)


def _crops(root: Path, items: list[dict]) -> tuple[list[Image.Image], list[str], list[str]]:
    crops = []
    for i in items:
        with Image.open(root / "images" / i["image_path"]) as img:
            crops.append(img.convert("RGB").crop((i["bbox_x"], i["bbox_y"], i["bbox_x"] + i["bbox_w"],
                                                  i["bbox_y"] + i["bbox_h"])))
    return crops, [i["true_caption"] for i in items], [i["false_caption"] for i in items]


def test_a_model_without_the_e2e_head_has_no_fusion_score(comp_run, tmp_path: Path) -> None:
    _, out = comp_run
    torch.manual_seed(0)
    model = KnowledgeCLIP(ModelConfig(clip="kclip-tiny"), LossWeights(e2e=0.0, g2e=0.0, itc=1.0)).eval()
    run = LoadedRun("no-e2e", "none", 0, load_train_config("tiny"), model, featurizer_for(model, tmp_path, 32),
                    torch.device("cpu"))
    metrics = evaluate_aro(run, out / RELATION_FILE, limit=8, progress=False)
    assert set(metrics) == {"chance", "relation_items", "pooled_relation_accuracy", "pooled_relation_macro_accuracy"}
    assert metrics["relation_items"] == 8


def test_kclip_eval_task_aro(neo4j_settings, comp_run, monkeypatch, capsys) -> None:
    name, out = comp_run
    metrics = kclip_json(neo4j_settings, "eval", "--run", name, "--task", "aro", "--data", str(out))
    assert metrics == pytest.approx(evaluate_aro(load_run(neo4j_settings, name), out, progress=False))
    (out.parent / "broken.json").write_text("[{", encoding="utf-8")
    # The CLI's error path, in-process (another `kclip` process costs half a minute of imports).
    from kclip import cli
    from kclip.platform import settings as settings_module

    monkeypatch.setattr(settings_module, "get_settings", lambda: neo4j_settings)
    monkeypatch.setattr(sys, "argv", ["kclip", "eval", "--run", name, "--task", "aro", "--data",
                                      str(out.parent / "broken.json")])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {out.parent / 'broken.json'}:1: not valid JSON (Expecting property name enclosed in double quotes); "
        "expected ARO's array of test cases"]

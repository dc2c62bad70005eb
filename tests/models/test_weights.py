"""Weights exactly: open_clip's files and OpenAI's TorchScript archives load into the architecture
they were trained for, and a weights/activation mismatch is refused naming the right one. Small
architectures of each kind (GELU, QuickGELU) with weights saved here."""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from kclip.models.clip_factory import create_clip, inspect_weights
from kclip.models.train_config import load_train_config
from kclip.platform.errors import ConfigError

QUICK, PLAIN = "kclip-tiny-quickgelu", "kclip-tiny"


def trained(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model, *_ = create_clip(name)
    return model.eval()


def outputs(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    images, texts = torch.randn(2, 3, 32, 32), torch.randint(0, 49408, (2, 77))
    with torch.no_grad():
        return model.encode_image(images), model.encode_text(texts)


def same_function(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.allclose(x, y, atol=1e-5) for x, y in zip(outputs(a), outputs(b)))


def test_the_activation_changes_the_function() -> None:
    # Why a mismatch must be refused: the same weights under GELU compute something else.
    quick = trained(QUICK)
    plain, *_ = create_clip(PLAIN)
    plain.load_state_dict(quick.state_dict())
    assert not same_function(quick, plain.eval())


def test_open_clip_folder_with_its_config(tmp_path: Path) -> None:
    quick = trained(QUICK)
    folder = tmp_path / "hub" / "tiny-quick"
    folder.mkdir(parents=True)
    torch.save(quick.state_dict(), folder / "open_clip_pytorch_model.bin")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": {"quick_gelu": True, "embed_dim": 64}}))
    loaded, *_ = create_clip(QUICK, folder / "open_clip_pytorch_model.bin")
    assert same_function(quick, loaded.eval())
    with pytest.raises(ConfigError, match=rf"trained with QuickGELU.*uses GELU.*model\.clip={QUICK}"):
        create_clip(PLAIN, folder / "open_clip_pytorch_model.bin")


def test_safetensors_file(tmp_path: Path) -> None:
    plain = trained(PLAIN)
    folder = tmp_path / "laion"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in plain.state_dict().items()}, folder / "open_clip_model.safetensors")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": {"embed_dim": 64}}))
    loaded, *_ = create_clip(PLAIN, folder / "open_clip_model.safetensors")
    assert same_function(plain, loaded.eval())
    with pytest.raises(ConfigError, match=rf"trained with GELU.*uses QuickGELU.*model\.clip={PLAIN}\b"):
        create_clip(QUICK, folder / "open_clip_model.safetensors")


def test_openai_torchscript_archive(tmp_path: Path) -> None:
    quick = trained(QUICK)
    archive = tmp_path / "ViT-tiny.pt"  # the layout of OpenAI's ViT-B-32.pt: a traced model
    example = (torch.randn(1, 3, 32, 32), torch.randint(0, 49408, (1, 77)))
    torch.jit.trace(quick, example, check_trace=False).save(str(archive))
    found = inspect_weights(archive)
    assert found.torchscript and found.quick_gelu is True
    loaded, *_ = create_clip(QUICK, archive)
    assert same_function(quick, loaded.eval())
    with pytest.raises(ConfigError, match="TorchScript code uses QuickGELU"):
        create_clip(PLAIN, archive)


def test_openai_in_the_path_means_quick_gelu(tmp_path: Path) -> None:
    folder = tmp_path / "timm" / "vit_base_patch32_clip_224.openai"
    folder.mkdir(parents=True)
    torch.save(trained(QUICK).state_dict(), folder / "open_clip_pytorch_model.bin")
    with pytest.raises(ConfigError, match="'openai' in its path"):
        create_clip(PLAIN, folder / "open_clip_pytorch_model.bin")


def test_a_file_that_cannot_tell_loads_where_it_fits(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    torch.save(trained(PLAIN).state_dict(), path)
    assert inspect_weights(path).quick_gelu is None
    create_clip(PLAIN, path)


def test_bundled_configs_name_the_activation_of_their_weights() -> None:
    for size in ("32", "16"):
        openai = load_train_config(f"vit-b-{size}-openai").model.clip
        laion = load_train_config(f"vit-b-{size}-laion").model.clip
        assert open_clip.get_model_config(openai)["quick_gelu"] is True
        assert not open_clip.get_model_config(laion).get("quick_gelu", False)
    with pytest.raises(ConfigError, match="vit-b-32-openai .*QuickGELU.* or vit-b-32-laion"):
        load_train_config("vit-b-32")

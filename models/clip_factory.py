"""Build the CLIP that Knowledge-CLIP continues training: one of our configs, open_clip's, or a JSON file.

    model, preprocess_train, preprocess_val, tokenizer = create_clip("kclip-tiny", pretrained=None)
    create_clip("ViT-B-32", pretrained="/models/ViT-B-32/open_clip_pytorch_model.bin")
    create_clip("my-configs/wide.json", pretrained=None)

Our architectures live in ``models/configs/*.json`` in open_clip's own format and are registered
with ``open_clip.add_model_config``, so everything open_clip knows about a model (transforms,
tokenizer, checkpoint loading) works for them unchanged.

Weights files: open_clip's (``open_clip_pytorch_model.bin``, ``open_clip_model.safetensors``) and
OpenAI's original TorchScript archives (``ViT-B-32.pt``). OpenAI's CLIP was trained with QuickGELU,
open_clip's LAION/DataComp models with GELU; weights run under the other activation load without a
word and compute a different function, so a file whose activation can be told (``inspect_weights``)
is refused by an architecture with the other one, naming the one to use.
"""

from __future__ import annotations

import difflib
import json
import logging
import zipfile
from contextlib import contextmanager
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
from open_clip.transformer import VisionTransformer
from torch import nn

from kclip.platform.errors import ConfigError
from kclip.models.tokenizer import fast_tokenizer

CONFIG_DIR = Path(__file__).parent / "configs"
_WEIGHT_SUFFIXES = {".bin", ".pt", ".pth", ".safetensors", ".ckpt"}
_registered: set[Path] = set()


def _register(path: Path) -> None:
    """Add a config file or folder to open_clip's registry once (it rescans every file on each add)."""
    path = path.resolve()
    if path not in _registered:
        open_clip.add_model_config(path)
        _registered.add(path)


class _DropRandomInitNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


@contextmanager
def _quiet_random_init():
    """open_clip warns on every random-init model; for our small configs that is the point, not news."""
    notice = _DropRandomInitNotice()
    logging.getLogger().addFilter(notice)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(notice)


def our_models() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def list_models() -> list[str]:
    """Ours first (``kclip-*``), then every architecture open_clip ships."""
    _register(CONFIG_DIR)
    ours = our_models()
    return ours + [m for m in open_clip.list_models() if m not in ours]


def create_clip(
    name_or_path: str | Path, pretrained: str | Path | None = None
) -> tuple[open_clip.CLIP, Callable, Callable, Callable]:
    """(model, preprocess_train, preprocess_val, tokenizer) for a model name or a JSON config path.

    ``pretrained``: a local weights file (open_clip's ``open_clip_pytorch_model.bin`` or any
    checkpoint ``open_clip.load_checkpoint`` reads), an open_clip tag such as ``openai`` or
    ``laion2b_s34b_b79k`` (needs network), or None for random weights.
    """
    name = _resolve_name(str(name_or_path))
    weights, is_file = _resolve_pretrained(name, pretrained)
    found = inspect_weights(Path(weights)) if is_file else None
    if found is not None:
        _require_same_activation(name, found)
    try:
        with _quiet_random_init():
            model, preprocess_train, preprocess_val = open_clip.create_model_and_transforms(
                name, pretrained=None if found and found.torchscript else weights)
        if found and found.torchscript:
            _load_torchscript_weights(model, found.path)
    except Exception as e:  # noqa: BLE001 - open_clip raises RuntimeError, OSError, hub and pickle errors alike
        if weights is None:
            raise
        if is_file:
            raise ConfigError(
                f"could not load weights file {weights} into {name!r}: {e}\n"
                f"Pass a checkpoint made for the {name!r} architecture (open_clip_pytorch_model.bin)."
            ) from e
        raise ConfigError(
            f"could not download open_clip weights {weights!r} for {name!r} ({type(e).__name__}: {e}). "
            "This machine has no network access to model hubs. Download the weights elsewhere and "
            "pass the local file instead: --pretrained /path/to/open_clip_pytorch_model.bin"
        ) from e
    visual = getattr(model, "visual", None)
    if (
        not isinstance(model, open_clip.CLIP)
        or not isinstance(visual, VisionTransformer)
        or visual.attn_pool is not None
    ):
        # Token-level features (models/encoders.py) read the towers' insides; HF text towers, CoCa
        # attentional-pool (CoCa-style) and ResNet image towers lay them out differently.
        raise ConfigError(
            f"{name!r} builds a {type(model).__name__} with a {type(visual).__name__} image tower; "
            "Knowledge-CLIP needs a plain open_clip CLIP with a ViT image tower (e.g. ViT-B-32, ViT-B-16, kclip-tiny)."
        )
    return model, preprocess_train, preprocess_val, fast_tokenizer(open_clip.get_tokenizer(name))


def _resolve_name(name_or_path: str) -> str:
    """The open_clip registry name for ``name_or_path``; a JSON path is registered under its file stem."""
    if name_or_path.endswith(".json") or Path(name_or_path).is_file():
        path = Path(name_or_path)
        if not path.is_file():
            raise ConfigError(f"model config file {path} does not exist; pass an open_clip JSON config or a model name")
        try:
            cfg = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"{path}: not a readable JSON model config: {e}") from e
        missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in cfg]
        if missing:
            raise ConfigError(
                f"{path}: an open_clip model config needs keys {missing} (see models/configs/kclip-tiny.json)"
            )
        _register(path)
        return path.stem
    names = list_models()
    if name_or_path.replace("/", "-") in names:  # open_clip accepts "ViT-B/32" for "ViT-B-32"
        return name_or_path.replace("/", "-")
    close = difflib.get_close_matches(name_or_path, names, n=5, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else f"ours are {', '.join(our_models())}"
    raise ConfigError(
        f"unknown CLIP model {name_or_path!r}: {hint} "
        "(kclip.models.clip_factory.list_models() lists them all; a path to a JSON config works too)"
    )


def _resolve_pretrained(name: str, pretrained: str | Path | None) -> tuple[str | None, bool]:
    """(what to hand open_clip, whether it is a local file). Checks files and tags before building."""
    if pretrained is None or str(pretrained) == "":
        return None, False
    text = str(pretrained)
    looks_like_file = isinstance(pretrained, Path) or "/" in text or Path(text).suffix in _WEIGHT_SUFFIXES
    if looks_like_file or Path(text).exists():
        if not Path(text).is_file():
            raise ConfigError(
                f"pretrained weights file {text} does not exist. Provide a local open_clip checkpoint for "
                f"{name!r}, e.g. --pretrained /path/to/open_clip_pytorch_model.bin "
                f"(from the Hugging Face repo of one of the tags {_tags(name)})."
            )
        return text, True
    tags = open_clip.list_pretrained_tags_by_model(name)
    if text not in tags:
        raise ConfigError(
            f"{text!r} is neither a file nor an open_clip pretrained tag of {name!r} "
            f"(tags: {_tags(name)}). Pass a local weights file: --pretrained /path/to/open_clip_pytorch_model.bin"
        )
    return text, False


def _tags(name: str) -> str:
    return ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none; it has no published weights"


@dataclass(frozen=True)
class WeightsFile:
    """What a weights file says about itself before it is loaded."""

    path: Path
    torchscript: bool  # OpenAI's original archives (code and weights), not a state dict
    quick_gelu: bool | None  # the activation it was trained with; None when the file cannot tell
    evidence: str  # how ``quick_gelu`` was told, for messages


def inspect_weights(path: Path) -> WeightsFile:
    """Tell a weights file's kind and, where it can be told, its activation: a TorchScript archive
    names its activation modules in its code; open_clip's Hugging Face folders keep the model config
    (``open_clip_config.json``) beside the weights; OpenAI's weights say "openai" in their path."""
    torchscript = _is_torchscript(path)
    if torchscript:
        quick = _torchscript_uses_quick_gelu(path)
        return WeightsFile(path, True, quick, "its TorchScript code " + ("uses" if quick else "has no") + " QuickGELU")
    config = path.parent / "open_clip_config.json"
    if config.is_file():
        try:
            model_cfg = json.loads(config.read_text(encoding="utf-8")).get("model_cfg", {})
        except (OSError, ValueError, AttributeError):
            model_cfg = None
        if isinstance(model_cfg, dict):
            return WeightsFile(path, False, bool(model_cfg.get("quick_gelu", False)), f"{config} says so")
    if any("openai" in part.lower() for part in path.resolve().parts[-3:]):
        return WeightsFile(path, False, True, "'openai' in its path: OpenAI's CLIP weights use QuickGELU")
    return WeightsFile(path, False, None, "")


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def _torchscript_uses_quick_gelu(path: Path) -> bool:
    with zipfile.ZipFile(path) as archive:
        return any(b"QuickGELU" in archive.read(name) for name in archive.namelist()
                   if "/code/" in name and name.endswith(".py"))


def _require_same_activation(name: str, found: WeightsFile) -> None:
    quick = bool((open_clip.get_model_config(name) or {}).get("quick_gelu", False))
    if found.quick_gelu is None or found.quick_gelu == quick:
        return
    trained, built = ("QuickGELU", "GELU") if found.quick_gelu else ("GELU", "QuickGELU")
    raise ConfigError(
        f"weights file {found.path} was trained with {trained} ({found.evidence}), but {name!r} uses {built}: "
        f"loaded so, the network would compute a different function. Use {_twin_hint(name, found.quick_gelu)}.")


def _twin_hint(name: str, quick_gelu: bool) -> str:
    """The architecture (and bundled training config) with the other activation."""
    base = name.removesuffix("-quickgelu")
    twin = f"{base}-quickgelu" if quick_gelu else base
    bundled = {"ViT-B-32": "vit-b-32", "ViT-B-16": "vit-b-16"}.get(base)
    config = f" (the bundled config {bundled}-{'openai' if quick_gelu else 'laion'})" if bundled else ""
    return f"model.clip={twin}{config}"


def _load_torchscript_weights(model: nn.Module, path: Path) -> None:
    """OpenAI's archives hold open_clip's CLIP parameter names, plus constants and buffers (such as
    the attention mask) that open_clip builds for itself."""
    state = torch.jit.load(str(path), map_location="cpu").state_dict()
    wanted = model.state_dict()
    missing = sorted(set(wanted) - set(state))
    if missing:
        raise ValueError(f"the archive lacks {len(missing)} of the model's weights (e.g. {', '.join(missing[:3])})")
    if state["logit_scale"].ndim != model.logit_scale.ndim:
        state["logit_scale"] = state["logit_scale"].reshape(model.logit_scale.shape)
    model.load_state_dict({k: state[k].to(wanted[k].dtype) for k in wanted})


def towers_of(model: nn.Module) -> tuple[int, int, int]:
    """(text width, image width, embed dim) of an open_clip CLIP built by ``create_clip``."""
    proj = model.text_projection
    embed_dim = proj.out_features if isinstance(proj, nn.Linear) else proj.shape[1]
    return model.transformer.width, model.visual.transformer.width, embed_dim

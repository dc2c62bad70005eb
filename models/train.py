"""``kclip train``: Knowledge-CLIP on a KG in Neo4j, fed live by the sampler, on CPU or GPUs.

    kclip train --kg scenes --config tiny --max-steps 100            # a CPU, minutes
    kclip train --kg wn18rr --config vit-b-16-openai --device cuda          # one GPU, bf16
    torchrun --nproc-per-node 8 -m kclip -- train --kg vg --config vit-b-16-openai --device cuda   # DDP

(The "--" keeps torchrun from reading our --run as an abbreviation of its own --run-path.)
    kclip train --resume RUN                                         # continue a killed run

The loop reads top to bottom: build, then for each epoch a fresh DataLoader over that epoch's
fixed order, an optimizer step every ``grad_accum`` batches, metrics to the run registry every
``log_every`` steps, a checkpoint every ``checkpoint_every``. Checkpoints hold the config, the
model, optimizer and scheduler states and the position in the data (epoch, batch), so a resumed
run sees exactly the batches the killed one would have.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from kclip.models.features import featurizer_for
from kclip.models.knowledge_clip import STRUCTURE_TERMS, KnowledgeCLIP, ModelConfig
from kclip.models.sampler import TripletStream, spec_from_config
from kclip.models.train_config import TrainConfig
from kclip.platform.errors import ConfigError, KclipError
from kclip.platform.neo4j_client import open_graph_store
from kclip.platform.progress import Progress
from kclip.platform.registry import Registry, new_run_name
from kclip.platform.settings import Settings

log = logging.getLogger(__name__)

KEEP_CHECKPOINTS = 2


@dataclass
class Position:
    """Where training is: optimizer steps done, and the next batch of which epoch."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0


@dataclass(frozen=True)
class Distributed:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str | None) -> Distributed:
    """One process per GPU under torchrun (WORLD_SIZE > 1), else a single process."""
    want = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if want.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but torch sees no CUDA device on this machine")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Distributed(0, 0, 1, torch.device(want))
    local_rank = int(os.environ["LOCAL_RANK"])
    if want.startswith("cuda"):
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if want.startswith("cuda") else "gloo")
    dev = torch.device("cuda", local_rank) if want.startswith("cuda") else torch.device("cpu")
    return Distributed(dist.get_rank(), local_rank, world, dev)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def lr_factor(step: int, warmup: int, max_steps: int) -> float:
    """Linear warmup, then cosine decay to zero at ``max_steps``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, max_steps - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def build_optimizer(model: torch.nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases, norms, embeddings and temperatures (as CLIP trains).

    The learned entity table has its own group: no decay (a row gets a gradient only when its
    entity is in the batch, while decay would shrink every row every step) and its own learning
    rate, since it starts small (``ENTITY_INIT_NORM``) and sees each row rarely, where the towers continue from CLIP
    at a fine-tuning rate (1e-5 in the ViT recipes) at which it would hardly move.
    """
    o = config.optim
    decay, no_decay, table = [], [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.startswith("entity_table."):
            table.append(param)
            continue
        plain = param.ndim < 2 or any(k in name for k in ("embedding", "log_scale", "logit_scale"))
        (no_decay if plain else decay).append(param)
    groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if table:
        groups.append({"params": table, "weight_decay": 0.0, "lr": o.entity_lr})
    return torch.optim.AdamW(groups, lr=o.lr, betas=o.betas, eps=o.eps, fused=device.type == "cuda")


def autocast_for(config: TrainConfig, device: torch.device):
    bf16 = config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


# -- checkpoints --------------------------------------------------------------------------------

def save_checkpoint(directory: Path, model: KnowledgeCLIP, optimizer, scheduler, position: Position,
                    config: TrainConfig, kg: str) -> Path:
    """Write ``step-N.pt`` atomically (a kill mid-write leaves the previous checkpoint intact)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"step-{position.step:08d}.pt"
    state = {
        "config": config.model_dump(mode="json"), "kg": kg, "position": asdict(position),
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def latest_checkpoint(directory: Path) -> Path | None:
    found = sorted(directory.glob("step-*.pt"))
    return found[-1] if found else None


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except (OSError, RuntimeError, EOFError) as exc:
        raise KclipError(f"checkpoint {path} is unreadable ({exc})") from None


def _prune(directory: Path, registry: Registry | None, keep: int = KEEP_CHECKPOINTS) -> None:
    for old in sorted(directory.glob("step-*.pt"))[:-keep]:
        old.unlink(missing_ok=True)
        if registry is not None:
            registry.remove_checkpoint(old)


def restore_rng(rng: dict) -> None:
    torch.set_rng_state(rng["torch"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


# -- the loop -----------------------------------------------------------------------------------

class Trainer:
    """Everything one training process holds; ``run()`` trains to ``config.max_steps``."""

    def __init__(self, settings: Settings, kg: str, config: TrainConfig, run_name: str, env: Distributed,
                 registry: Registry | None, checkpoint: dict | None = None, progress: bool = True):
        self.settings, self.kg, self.config, self.run_name, self.env = settings, kg, config, run_name, env
        self.registry = registry if env.is_main else None
        self.progress = progress and env.is_main
        self.directory = settings.runs_root / run_name
        seed_everything(config.seed + env.rank)
        if env.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        # Resuming, the checkpoint holds every weight (the KD teacher's too): the original weights
        # file is not read, and may be gone.
        self.model = KnowledgeCLIP(config.model, config.losses, load_pretrained=checkpoint is None)
        if checkpoint is None and config.model.init_step is not None:
            start_from_run(self.model, settings, config.model, kg)
        self.model.to(env.device)
        self.optimizer = build_optimizer(self.model, config, env.device)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, config.optim.warmup_steps, config.max_steps))
        self.position = Position()
        if checkpoint is not None:
            self._restore(checkpoint)
        self.ddp = (DistributedDataParallel(self.model, device_ids=[env.local_rank] if env.device.type == "cuda" else None)
                    if env.world_size > 1 else None)
        featurizer = featurizer_for(self.model, settings.media_root, config.data.max_text_tokens)
        spec = spec_from_config(kg, config)
        self.stream = TripletStream(settings, spec, featurizer, env.world_size, env.rank)

    def _restore(self, checkpoint: dict) -> None:
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.position = Position(**checkpoint["position"])
        restore_rng(checkpoint["rng"])

    def run(self) -> Position:
        cfg, pos = self.config, self.position
        sums: dict[str, float] = defaultdict(float)
        window_start, window_steps = time.perf_counter(), 0
        with Progress(f"train {self.run_name}", total=cfg.max_steps - pos.step, unit="steps",
                      enabled=self.progress) as bar:
            while pos.step < cfg.max_steps:
                for terms in self._epoch():
                    for name, value in terms.items():
                        sums[name] += value
                    window_steps += 1
                    bar.advance(1)
                    bar.set_status(" ".join(f"{k}={v:.3f}" for k, v in terms.items()))
                    if pos.step % cfg.log_every == 0 or pos.step == cfg.max_steps:
                        self._log(sums, window_steps, time.perf_counter() - window_start)
                        sums, window_start, window_steps = defaultdict(float), time.perf_counter(), 0
                    if pos.step % cfg.checkpoint_every == 0 or pos.step == cfg.max_steps:
                        self.checkpoint()
                    if pos.step >= cfg.max_steps:
                        break
        return pos

    def _epoch(self):
        """Yield each optimizer step's loss terms for the rest of this epoch, then move to the next."""
        cfg, pos, env = self.config, self.position, self.env
        loader = self.stream.loader(pos.epoch, pos.batch_in_epoch, num_workers=cfg.data.num_workers,
                                    pin_memory=env.device.type == "cuda", prefetch_factor=cfg.data.prefetch_factor)
        if len(self.stream.plan) == 0:
            raise KclipError(f"KG {self.kg!r} has no {cfg.data.split!r} triplets to train on")
        pending: list[dict[str, float]] = []
        for batch in loader:
            pending.append(self._backward(batch.to(env.device), last=len(pending) + 1 == cfg.optim.grad_accum))
            pos.batch_in_epoch += 1
            if len(pending) == cfg.optim.grad_accum:
                yield self._optimizer_step(pending)
                pending = []
                if pos.step >= cfg.max_steps:
                    return
        if pending:  # the epoch's last, partial accumulation still makes a step
            yield self._optimizer_step(pending)
        pos.epoch, pos.batch_in_epoch = pos.epoch + 1, 0

    def _backward(self, batch, last: bool) -> dict[str, float]:
        model = self.ddp or self.model
        # DDP syncs gradients only on the last micro-batch of an accumulation.
        sync = nullcontext() if (last or self.ddp is None) else self.ddp.no_sync()
        with sync, autocast_for(self.config, self.env.device):
            out = model(batch)
            (out["loss"] / self.config.optim.grad_accum).backward()
        return {k: float(v.detach()) for k, v in out.items()}

    def _optimizer_step(self, micro: list[dict[str, float]]) -> dict[str, float]:
        o = self.config.optim
        if o.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), o.clip_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.position.step += 1
        return {k: sum(m[k] for m in micro) / len(micro) for k in micro[0]}

    def _log(self, sums: dict[str, float], steps: int, seconds: float) -> None:
        if self.registry is None or steps == 0:
            return
        metrics = {f"train/{k}": v / steps for k, v in sums.items()}
        metrics["lr"] = self.scheduler.get_last_lr()[0]
        metrics["steps_per_s"] = steps / seconds if seconds > 0 else 0.0
        metrics["samples_per_s"] = metrics["steps_per_s"] * self.config.data.batch_size * \
            self.config.optim.grad_accum * self.env.world_size
        self.registry.log_metrics(self.run_name, self.position.step, metrics)
        self.registry.update_run(self.run_name, step=self.position.step)

    def checkpoint(self) -> Path | None:
        if not self.env.is_main:
            return None
        path = save_checkpoint(self.directory, self.model, self.optimizer, self.scheduler, self.position,
                               self.config, self.kg)
        if self.registry is not None:
            self.registry.add_checkpoint(self.run_name, self.position.step, path)
        _prune(self.directory, self.registry)
        return path


def train(settings: Settings, kg: str | None = None, config: TrainConfig | None = None, run_name: str | None = None,
          device: str | None = None, max_steps: int | None = None, resume: str | None = None,
          progress: bool = True) -> str:
    """Train (or resume) a run; returns its name. Call under torchrun for several GPUs."""
    env = setup_distributed(device)
    registry = Registry(settings.registry) if env.is_main else None
    checkpoint = None
    if resume is not None:
        kg, config, checkpoint = _resume_state(settings, resume, kg, env)
        run_name = resume
    if kg is None or config is None:
        raise ConfigError("kclip train needs --kg and --config (or --resume RUN)")
    if max_steps is not None:
        config = config.model_copy(update={"max_steps": max_steps})
    if resume is None and config.model.init_from is not None:
        config = config.model_copy(update={"model": resolve_init_from(settings, config.model)})
    if resume is None:
        config = config.model_copy(update={"model": size_entity_table(settings, kg, config.model)})
    run_name = _agree_on_name(run_name or new_run_name(kg), env)
    if registry is not None and resume is None:
        registry.create_run(run_name, kg, config.model_dump(mode="json"), env.device.type, env.world_size)
    elif registry is not None:
        # Steps after the checkpoint will be trained (and logged) again.
        registry.drop_metrics_after(run_name, checkpoint["position"]["step"])
        registry.update_run(run_name, status="running")
    trainer = None
    try:
        trainer = Trainer(settings, kg, config, run_name, env, registry, checkpoint, progress)
        trainer.run()
    except BaseException:
        if registry is not None:
            progress_made = {"step": trainer.position.step} if trainer is not None else {}
            registry.update_run(run_name, status="failed", **progress_made)
        raise
    finally:
        if trainer is not None:
            trainer.stream.close()  # its DataLoader workers and Neo4j driver, on success or failure
    if registry is not None:
        registry.update_run(run_name, status="finished", step=trainer.position.step)
    _evaluate_at_end(settings, kg, config, run_name, env)
    return run_name


def _evaluate_at_end(settings: Settings, kg: str, config: TrainConfig, run_name: str, env: Distributed) -> None:
    """``eval_split`` in the config: evaluate the finished run there and record it (rank 0 only)."""
    if config.eval_split is None or not env.is_main:
        return
    from kclip.models.evaluate import evaluate_and_record  # evaluation imports training; not the reverse

    evaluate_and_record(settings, run_name, kg, config.eval_split, device=env.device)


# -- continuing from another run or a weights file ---------------------------------------------

ARCHITECTURE = ("clip", "fusion_width", "fusion_layers", "fusion_heads", "gnn_layers")


def resolve_init_from(settings: Settings, model: ModelConfig) -> ModelConfig:
    """``init_from`` made exact: a weights file becomes ``pretrained``; a run gives its architecture
    and the step of the checkpoint to start from (recorded, so the lineage names a fixed point)."""
    source = model.init_from
    parent = latest_checkpoint(settings.runs_root / source) if "/" not in source else None
    if parent is not None:
        parent_model = TrainConfig.model_validate(load_checkpoint(parent)["config"]).model
        taken = {name: getattr(parent_model, name) for name in ARCHITECTURE}
        changed = {k: (getattr(model, k), v) for k, v in taken.items() if getattr(model, k) != v}
        if changed:
            log.warning("starting from run %s: its architecture replaces the config's (%s)", source,
                        ", ".join(f"{k}: {a} -> {b}" for k, (a, b) in changed.items()))
        step = int(parent.stem.removeprefix("step-"))
        return model.model_copy(update={**taken, "pretrained": None, "init_step": step})
    if Path(source).is_file():
        return model.model_copy(update={"pretrained": str(Path(source).resolve()), "init_step": None})
    raise ConfigError(f"--init-from {source!r}: neither a run with a checkpoint under {settings.runs_root} "
                      "nor a weights file")


def size_entity_table(settings: Settings, kg: str, model: ModelConfig) -> ModelConfig:
    """``entity_rows`` from the KG as it is now (its highest entity idx + 1), unless the table is off.

    ``auto`` leaves it off for KGs with image entities: an image always identifies its entity, and
    the explorer's cross-modal queries (free text, an uploaded image) are content alone, so learned
    vectors in the stored embeddings only blur them (an entity's own image stopped ranking it
    first). ``on`` builds it anyway."""
    if model.entity_embedding == "off" or model.entity_rows is not None:
        return model
    with open_graph_store(settings) as store:
        _, last, _ = store.entity_idx_range(kg)
        has_images = store.entity_counts(kg).get("image", 0) > 0  # not stats(): that counts every triplet too
    if model.entity_embedding == "auto" and has_images:
        return model
    return model.model_copy(update={"entity_rows": last + 1})


def start_from_run(model: KnowledgeCLIP, settings: Settings, config: ModelConfig, kg: str) -> None:
    """Load the parent run's weights (heads it lacks keep their fresh init); the KD teacher becomes
    that start, frozen, so distillation keeps what the parent knew. The parent's learned entity
    vectors carry over for the entities they share when it trained them (E2E, E2R or G2E) on the same KG."""
    path = settings.runs_root / str(config.init_from) / f"step-{config.init_step:08d}.pt"
    if not path.is_file():
        raise KclipError(f"run {config.init_from!r} no longer has its step-{config.init_step} checkpoint ({path})")
    checkpoint = load_checkpoint(path)
    state = {k: v for k, v in checkpoint["model"].items() if not k.startswith("teacher.")}
    parent = TrainConfig.model_validate(checkpoint["config"])
    trained_table = bool(STRUCTURE_TERMS & set(parent.losses.enabled()))  # else its rows are only their init
    _carry_entity_table(model, state, same_kg=checkpoint["kg"] == kg and trained_table)
    missing, unexpected = model.load_state_dict(state, strict=False)
    fresh = sorted({k.split(".")[0] for k in missing if not k.startswith("teacher.")})
    if fresh or unexpected:
        log.info("from run %s: fresh %s; not used %s", config.init_from, fresh or "-",
                 sorted({k.split(".")[0] for k in unexpected}) or "-")
    if model.teacher is not None:
        model.teacher.load_state_dict(model.clip.state_dict())


def _carry_entity_table(model: KnowledgeCLIP, state: dict, same_kg: bool) -> None:
    """Fit the parent's entity table into ``state`` for ``model``: rows of the entities both
    tables cover (the KG may have grown since); none from another KG, whose idx mean other entities."""
    key = "entity_table.weight"
    parent = state.pop(key, None)
    if parent is None or model.entity_table is None or not same_kg:
        return
    table = model.entity_table.weight.detach().clone()
    if parent.shape[1] == table.shape[1]:
        rows = min(parent.shape[0], table.shape[0])
        table[:rows] = parent[:rows]
        state[key] = table


def _resume_state(settings: Settings, run_name: str, kg: str | None, env: Distributed):
    path = latest_checkpoint(settings.runs_root / run_name)
    if path is None:
        raise KclipError(f"run {run_name!r} has no checkpoint in {settings.runs_root / run_name} to resume from")
    checkpoint = load_checkpoint(path, env.device)
    if kg is not None and kg != checkpoint["kg"]:
        raise ConfigError(f"run {run_name!r} trained on KG {checkpoint['kg']!r}, not {kg!r}")
    return checkpoint["kg"], TrainConfig.model_validate(checkpoint["config"]), checkpoint


def _agree_on_name(name: str, env: Distributed) -> str:
    """Every rank must use rank 0's run name (generated names hold a timestamp)."""
    if env.world_size == 1:
        return name
    box = [name]
    dist.broadcast_object_list(box, src=0)
    return box[0]

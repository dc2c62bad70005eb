"""The run registry: every training run, its config, per-step metrics, checkpoints and evaluations.

SQLAlchemy 2.0 over any database URL (``KCLIP_REGISTRY_URL``); a SQLite file by default. Writes
are small and frequent (metrics every few steps), so each call is one short transaction.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String, create_engine, delete, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from kclip.platform.errors import ConfigError, NotFoundError

RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Base(DeclarativeBase):
    pass


class Run(Base):
    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True, index=True)
    kg: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="running")  # running | finished | failed
    device: Mapped[str] = mapped_column(String(32), default="cpu")
    world_size: Mapped[int] = mapped_column(Integer, default=1)
    step: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now, onupdate=_now)
    checkpoints: Mapped[list["Checkpoint"]] = relationship(back_populates="run", order_by="Checkpoint.step")

    @property
    def parent(self) -> str | None:
        """The run or weights file this run started from (``kclip train --init-from``), if any."""
        model = self.config.get("model") or {}
        return model.get("init_from") or model.get("pretrained")


class Metric(Base):
    __tablename__ = "metrics"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(1024))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    run: Mapped[Run] = relationship(back_populates="checkpoints")


class Evaluation(Base):
    __tablename__ = "evaluations"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    kg: Mapped[str] = mapped_column(String(64))
    split: Mapped[str] = mapped_column(String(16))
    step: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)


# The metrics a comparison's table shows, in order: `kclip compare` prints them, the UI plots them.
COMPARISON_HEADLINE = ("mrr", "hits@10", "relation_mrr", "i2t_r@1", "i2t_r@5", "t2i_r@1", "t2i_r@5", "swap_accuracy",
                       # `kclip compare --aro / --retrieval`: ARO's towers and fusion scorers, retrieval on a file
                       "aro/pooled_relation_accuracy", "aro/fusion_relation_accuracy",
                       "aro/pooled_attribute_accuracy", "aro/fusion_attribute_accuracy",
                       "retrieval/i2t_r@1", "retrieval/i2t_r@5", "retrieval/t2i_r@1", "retrieval/t2i_r@5")


class Comparison(Base):
    """One ``kclip compare``: its variants' runs and metrics, as the command printed them."""

    __tablename__ = "comparisons"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), index=True)  # the run-name prefix
    kg: Mapped[str] = mapped_column(String(64))
    split: Mapped[str] = mapped_column(String(16))
    config: Mapped[dict] = mapped_column(JSON)  # the shared config, before each variant's changes
    # [{variant, run, metrics, note, seeds, runs, spread, n, per_run}], in the order compared: ``run`` the
    # first seed's run, ``metrics`` the means over seeds (None: n/a), ``spread`` their sample std.
    results: Mapped[list] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)


def new_run_name(kg: str) -> str:
    return f"{kg}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


class Registry:
    def __init__(self, url: str):
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = create_engine(url)
        Base.metadata.create_all(self.engine)

    def _run(self, session: Session, name: str) -> Run:
        run = session.scalar(select(Run).where(Run.name == name))
        if run is None:
            raise NotFoundError(f"no run named {name!r} in the registry ({self.engine.url})")
        return run

    def create_run(self, name: str, kg: str, config: dict[str, Any], device: str, world_size: int) -> Run:
        if not RUN_NAME.match(name):
            raise ConfigError(f"run name {name!r}: use 1-128 letters, digits, '_', '.', '-'")
        with Session(self.engine, expire_on_commit=False) as s:
            if s.scalar(select(Run).where(Run.name == name)) is not None:
                raise ConfigError(f"a run named {name!r} exists already; pick another --run or --resume it")
            run = Run(name=name, kg=kg, config=json.loads(json.dumps(config, default=str)), device=device,
                      world_size=world_size)
            s.add(run)
            s.commit()
            return run

    def get_run(self, name: str) -> Run:
        with Session(self.engine, expire_on_commit=False) as s:
            run = self._run(s, name)
            run.checkpoints  # load while the session is open
            return run

    def list_runs(self) -> list[Run]:
        with Session(self.engine, expire_on_commit=False) as s:
            return list(s.scalars(select(Run).order_by(Run.created_at.desc())))

    def update_run(self, name: str, **fields: Any) -> None:
        with Session(self.engine) as s:
            run = self._run(s, name)
            for key, value in fields.items():
                setattr(run, key, value)
            s.commit()

    def log_metrics(self, name: str, step: int, values: dict[str, float]) -> None:
        with Session(self.engine) as s:
            run_id = self._run(s, name).id
            s.add_all(Metric(run_id=run_id, step=step, name=k, value=float(v)) for k, v in values.items())
            s.commit()

    def drop_metrics_after(self, name: str, step: int) -> None:
        """Forget metrics logged past ``step``: a resumed run logs those steps again."""
        with Session(self.engine) as s:
            run_id = self._run(s, name).id
            s.execute(delete(Metric).where(Metric.run_id == run_id, Metric.step > step))
            s.commit()

    def metrics(self, name: str, metric: str | None = None) -> list[tuple[int, str, float]]:
        with Session(self.engine) as s:
            query = select(Metric.step, Metric.name, Metric.value).join(Run).where(Run.name == name)
            if metric is not None:
                query = query.where(Metric.name == metric)
            return [tuple(row) for row in s.execute(query.order_by(Metric.step, Metric.name))]

    def add_checkpoint(self, name: str, step: int, path: Path) -> None:
        with Session(self.engine) as s:
            run_id = self._run(s, name).id
            s.add(Checkpoint(run_id=run_id, step=step, path=str(path)))
            s.commit()

    def remove_checkpoint(self, path: Path) -> None:
        with Session(self.engine) as s:
            s.execute(delete(Checkpoint).where(Checkpoint.path == str(path)))
            s.commit()

    def add_evaluation(self, name: str, kg: str, split: str, step: int, metrics: dict[str, float]) -> None:
        with Session(self.engine) as s:
            run_id = self._run(s, name).id
            s.add(Evaluation(run_id=run_id, kg=kg, split=split, step=step, metrics=metrics))
            s.commit()

    def evaluations(self, name: str) -> list[Evaluation]:
        with Session(self.engine, expire_on_commit=False) as s:
            query = select(Evaluation).join(Run, Evaluation.run_id == Run.id).where(Run.name == name)
            return list(s.scalars(query.order_by(Evaluation.created_at)))

    def add_comparison(self, name: str, kg: str, split: str, config: dict[str, Any],
                       results: list[dict[str, Any]]) -> None:
        with Session(self.engine) as s:
            s.add(Comparison(name=name, kg=kg, split=split, config=json.loads(json.dumps(config, default=str)),
                             results=results))
            s.commit()

    def comparisons(self, kg: str | None = None) -> list[Comparison]:
        """Recorded ``kclip compare`` results, newest first; only those on ``kg`` when given."""
        with Session(self.engine, expire_on_commit=False) as s:
            query = select(Comparison).order_by(Comparison.created_at.desc(), Comparison.id.desc())
            if kg is not None:
                query = query.where(Comparison.kg == kg)
            return list(s.scalars(query))

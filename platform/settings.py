"""Where things are: Neo4j, the media store, the run registry. One validated object for all of kclip.

Values come from environment variables (``KCLIP_NEO4J_URI``, ``KCLIP_NEO4J_USER``, ...), then a
``.env`` file in the working directory, then the defaults below.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kclip.platform.errors import ConfigError

DEFAULT_HOME = Path("~/.kclip").expanduser()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KCLIP_", env_file=".env", extra="ignore", populate_by_name=True)

    home: Path = Field(DEFAULT_HOME, description="root of kclip's state: media, runs, caches")

    neo4j_uri: str | None = Field(
        None, description="Bolt URI of a Neo4j to use; unset means the local service (kclip neo4j start)"
    )
    neo4j_user: str = "neo4j"
    neo4j_password: SecretStr | None = Field(
        None, description="unset means the password the local service generated and stored"
    )
    neo4j_database: str = "neo4j"

    neo4j_state_dir: Path | None = Field(None, description="local service data; default HOME/neo4j")
    neo4j_bolt_port: int = Field(7687, ge=1, le=65535)
    neo4j_heap: str = Field(
        "auto", pattern=r"^(auto|\d+[kmgKMG])$", description="local service heap: auto (sized to the machine) or 4g"
    )
    neo4j_pagecache: str = Field(
        "auto", pattern=r"^(auto|\d+[kmgKMG])$", description="local service page cache: auto or 2g"
    )

    cache_path: Path | None = Field(
        None, alias="KCLIP_CACHE_DIR", description="downloads (Neo4j's jars) shared by all state; default HOME/cache"
    )
    media_dir: Path | None = Field(None, description="content-addressed image store; default HOME/media")
    # Pillow's decompression-bomb limit, as media.DEFAULT_MAX_IMAGE_PIXELS (not imported: settings load before Pillow)
    max_image_pixels: int = Field(89_478_485, ge=1, description="loads refuse images with more pixels than this")
    registry_url: str | None = Field(None, description="SQLAlchemy URL; default sqlite:///HOME/runs.db")
    runs_dir: Path | None = Field(None, description="checkpoints; default HOME/runs")

    @field_validator("neo4j_uri")
    @classmethod
    def _bolt_uri(cls, uri: str | None) -> str | None:
        schemes = ("bolt://", "bolt+s://", "bolt+ssc://", "neo4j://", "neo4j+s://", "neo4j+ssc://")
        if uri is not None and not uri.startswith(schemes):
            raise ValueError(f"expected a Bolt URI starting with one of {', '.join(schemes)}, got {uri!r}")
        return uri

    @field_validator("home", "neo4j_state_dir", "media_dir", "runs_dir", "cache_path")
    @classmethod
    def _expand(cls, path: Path | None) -> Path | None:
        return path.expanduser() if path is not None else None

    @property
    def neo4j_dir(self) -> Path:
        return self.neo4j_state_dir or self.home / "neo4j"

    @property
    def media_root(self) -> Path:
        return self.media_dir or self.home / "media"

    @property
    def runs_root(self) -> Path:
        return self.runs_dir or self.home / "runs"

    @property
    def registry(self) -> str:
        return self.registry_url or f"sqlite:///{self.home / 'runs.db'}"

    @property
    def cache_dir(self) -> Path:
        return self.cache_path or self.home / "cache"

    @property
    def uses_local_service(self) -> bool:
        return self.neo4j_uri is None

    @property
    def bolt_uri(self) -> str:
        return self.neo4j_uri or f"bolt://127.0.0.1:{self.neo4j_bolt_port}"


def load_settings(**overrides) -> Settings:
    """Build settings, turning pydantic's error into one that names the variable to fix."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"KCLIP_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()

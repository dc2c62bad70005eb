"""``key=value`` options from the command line (``-o``, ``--set``), parsed without importing torch.

Kept apart from ``models/train_config.py`` on purpose: that module pulls in the model (torch,
open_clip), and commands that never train (``kclip load``) must start in about a second.
"""

from __future__ import annotations

import json
from typing import Any

from kclip.platform.errors import ConfigError


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["data.batch_size=16", "losses.kd=0"]`` as ``{"data.batch_size": 16, ...}``.

    Values that read as JSON (numbers, booleans, lists) are parsed; the rest stay strings.
    Pydantic validates them when the config is built.
    """
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"expected key=value, got {pair!r}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides

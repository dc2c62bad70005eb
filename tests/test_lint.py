"""No unused imports, undefined names or similar slips anywhere in the tree (pyflakes)."""

import sys
from pathlib import Path

from pyflakes.api import checkRecursive
from pyflakes.reporter import Reporter

ROOT = Path(__file__).resolve().parents[1]
PARTS = ["platform", "kg_loaders", "models", "ui", "src", "bench", "tests"]


def test_pyflakes_finds_nothing(capsys):
    reporter = Reporter(warningStream=sys.stdout, errorStream=sys.stderr)
    problems = checkRecursive([str(ROOT / part) for part in PARTS], reporter)
    assert problems == 0, capsys.readouterr().out

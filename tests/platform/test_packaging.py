"""The packaging trap: platform/ must not shadow the standard library's platform module."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_stdlib_platform_still_imports_from_the_repository_root():
    code = "import platform, torch; platform.system(); import kclip.platform.settings, kclip.models, kclip.ui"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_part_says_what_lives_there():
    import kclip
    import kclip.kg_loaders
    import kclip.models
    import kclip.ui

    for module in (kclip, kclip.kg_loaders, kclip.models, kclip.ui):
        assert module.__doc__ and len(module.__doc__) > 80, module.__name__
    assert "platform" in kclip.__doc__  # platform/ has no __init__.py; kclip's docstring describes it

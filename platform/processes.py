"""Whether a process is alive, told apart from a zombie (dead, not yet reaped), on this machine."""

from __future__ import annotations

import os
from pathlib import Path


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs. Our own dead child is reaped here; a dead child of another live
    process stays a zombie until that one reaps it, and counts as dead."""
    try:
        # kill(pid, 0) still succeeds on a zombie: reap our own child first.
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass  # not our child: its own parent reaps it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False  # no /proc (macOS) or already gone
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"  # state follows "(comm)", which may hold spaces

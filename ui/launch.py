"""Starting and stopping the explorer (``streamlit run`` on ``app.py``).

    from kclip.ui.launch import run_ui, serve_ui, wait_until_healthy
    proc = run_ui(port=8502)                   # returns at once; proc.terminate() stops it
    wait_until_healthy("http://127.0.0.1:8502")
    serve_ui(home)                             # this process becomes the explorer (what `kclip ui` does)
    stop_all(home)                             # what `kclip ui --stop` does

Streamlit reads kclip's settings from the ``KCLIP_*`` environment, which the subprocess inherits
(plus ``env`` when given).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Mapping, NoReturn

from kclip.platform.errors import KclipError
from kclip.platform.processes import process_alive

APP = Path(__file__).with_name("app.py")


def ui_command(address: str = "127.0.0.1", port: int = 8501, headless: bool = True) -> list[str]:
    """The ``streamlit run`` command line for the explorer."""
    return [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.address", address,
        "--server.port", str(port),
        "--server.headless", str(headless).lower(),
        "--browser.gatherUsageStats", "false",
        # No file watcher: nobody edits an installed app, and polling costs CPU.
        "--server.fileWatcherType", "none",
    ]


def run_ui(address: str = "127.0.0.1", port: int = 8501, headless: bool = True,
           env: Mapping[str, str] | None = None) -> subprocess.Popen:
    """Start the explorer in the background; the caller stops it with ``terminate()``.

    ``headless=False`` lets Streamlit open a browser tab. ``env`` is added to this process's
    environment (tests point the app at their own Neo4j that way).
    """
    full_env = {**os.environ, **(env or {})}
    return subprocess.Popen(ui_command(address, port, headless), env=full_env)


def serve_ui(home: Path, address: str = "127.0.0.1", port: int = 8501, headless: bool = True) -> NoReturn:
    """Become the explorer: this process is replaced by Streamlit (same pid), so killing it, even
    with ``kill -9``, leaves nothing listening, and ``kclip ui --stop`` finds it by its pid file."""
    replace_previous(home, port)
    _pid_file(home, port).write_text(str(os.getpid()))
    sys.stdout.flush()
    os.execv(sys.executable, ui_command(address, port, headless))


def wait_until_healthy(base_url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    """Block until Streamlit's health endpoint answers "ok"; raises ``KclipError`` on timeout or exit."""
    deadline = time.monotonic() + timeout
    url = base_url.rstrip("/") + "/_stcore/health"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise KclipError(f"the explorer exited with code {proc.returncode} before answering at {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.3)
    raise KclipError(f"the explorer did not answer at {url} within {timeout:.0f}s")


@contextmanager
def answering(proc: subprocess.Popen, base_url: str, timeout: float = 60.0) -> Iterator[str]:
    """``base_url`` once the app that ``proc`` runs answers there; afterwards the app is stopped
    (terminated, killed if it lingers 15 s)."""
    try:
        wait_until_healthy(base_url, timeout=timeout, proc=proc)
        yield base_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_detached(home: Path, address: str = "127.0.0.1", port: int = 8501) -> int:
    """Start the explorer in its own session so it outlives this process (``kclip demo``); returns its pid.

    The pid goes to ``home/ui-PORT.pid`` and the output to ``home/ui.log``; ``stop_all`` ends it.
    """
    replace_previous(home, port)
    with open(home / "ui.log", "ab") as log:
        proc = subprocess.Popen(ui_command(address, port), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    _pid_file(home, port).write_text(str(proc.pid))
    wait_until_healthy(f"http://{address}:{port}", proc=proc)
    return proc.pid


def replace_previous(home: Path, port: int) -> None:
    """One explorer per home and port: a second start replaces the first (it would not get the port)."""
    home.mkdir(parents=True, exist_ok=True)
    _stop(_pid_file(home, port))


def stop_all(home: Path) -> int:
    """Stop every explorer started from ``home`` (foreground or detached); how many were running."""
    return sum(_stop(pid_file) for pid_file in sorted(home.glob("ui*.pid")))


def _pid_file(home: Path, port: int) -> Path:
    return home / f"ui-{port}.pid"


def _stop(pid_file: Path, grace_s: float = 10.0) -> bool:
    """End the explorer a pid file names, if that pid still is one (pids get reused); False if none."""
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return False
    pid_file.unlink(missing_ok=True)
    if not _is_explorer(pid):
        return False
    # A detached explorer leads its own session: signal the group, children included.
    kill = os.killpg if os.getpgid(pid) == pid else os.kill
    kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while process_alive(pid):
        if time.monotonic() > deadline:
            kill(pid, signal.SIGKILL)
            break
        time.sleep(0.1)
    return True


def _is_explorer(pid: int) -> bool:
    if not process_alive(pid):
        return False
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # no /proc (not Linux): trust the pid file
        return True
    return b"streamlit" in command and str(APP).encode() in command

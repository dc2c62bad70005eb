"""Starting the explorer: ``streamlit run`` on ``app.py`` in a subprocess.

    from kclip.ui.launch import run_ui, serve_ui, wait_until_healthy
    proc = run_ui(port=8502)                   # returns at once; proc.terminate() stops it
    wait_until_healthy("http://127.0.0.1:8502")
    serve_ui()                                 # blocks until Ctrl-C (what `kclip ui` does)

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
from pathlib import Path
from typing import Mapping

from kclip.platform.errors import KclipError

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


def serve_ui(address: str = "127.0.0.1", port: int = 8501, headless: bool = True) -> int:
    """Run the explorer in the foreground until it exits or Ctrl-C; returns its exit code."""
    proc = run_ui(address, port, headless)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            return proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()


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


def start_detached(home: Path, address: str = "127.0.0.1", port: int = 8501) -> int:
    """Start the explorer in its own session so it outlives this process (``kclip demo``); returns its pid.

    The pid goes to ``home/ui.pid`` and the output to ``home/ui.log``; ``stop_detached`` ends it.
    """
    stop_detached(home)  # one explorer per home: a second demo replaces the first
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "ui.log", "ab") as log:
        proc = subprocess.Popen(ui_command(address, port), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    (home / "ui.pid").write_text(str(proc.pid))
    wait_until_healthy(f"http://{address}:{port}", proc=proc)
    return proc.pid


def stop_detached(home: Path) -> bool:
    """Stop the explorer ``start_detached`` left running; False when there was none."""
    pid_file = home / "ui.pid"
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return False
    pid_file.unlink(missing_ok=True)
    try:
        os.killpg(pid, signal.SIGTERM)  # its own session: the streamlit process and any children
    except ProcessLookupError:
        return False
    return True

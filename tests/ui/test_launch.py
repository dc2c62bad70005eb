"""Starting and stopping the explorer as users do: `kclip ui` in a terminal, `--detach`, `--stop`,
and a launcher killed with SIGKILL. Afterwards nothing may still listen on the port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ports import free_port

from kclip.ui.launch import wait_until_healthy

KCLIP = [sys.executable, "-m", "kclip"]


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_closed(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while listening(port):
        assert time.monotonic() < deadline, f"something still listens on port {port}"
        time.sleep(0.2)


@pytest.fixture
def ui_cli_env(ui_env_vars: dict[str, str], tmp_path: Path) -> dict[str, str]:
    # A home of its own, so pid files of other tests' explorers are not in the way.
    return {**os.environ, **ui_env_vars, "KCLIP_HOME": str(tmp_path / "home")}


def kclip(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*KCLIP, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_killed_terminal_explorer_leaves_nothing_listening(ui_cli_env) -> None:
    port = free_port()
    proc = subprocess.Popen([*KCLIP, "ui", "--port", str(port)], env=ui_cli_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", timeout=90, proc=proc)
        os.kill(proc.pid, signal.SIGKILL)  # the process `kclip ui` started as
        proc.wait(timeout=10)
        wait_closed(port)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_ui_stop_ends_terminal_and_detached_explorers(ui_cli_env) -> None:
    fg_port, bg_port = free_port(), free_port()
    fg = subprocess.Popen([*KCLIP, "ui", "--port", str(fg_port)], env=ui_cli_env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        detached = kclip(ui_cli_env, "ui", "--detach", "--port", str(bg_port))
        assert detached.returncode == 0, detached.stderr
        wait_until_healthy(f"http://127.0.0.1:{fg_port}", timeout=90, proc=fg)
        assert listening(bg_port)
        stopped = kclip(ui_cli_env, "ui", "--stop")
        assert stopped.returncode == 0 and "stopped 2 explorer(s)" in stopped.stdout, stopped.stdout
        fg.wait(timeout=15)
        wait_closed(fg_port)
        wait_closed(bg_port)
        again = kclip(ui_cli_env, "ui", "--stop")
        assert "no explorer was running" in again.stdout
    finally:
        if fg.poll() is None:
            fg.kill()
        kclip(ui_cli_env, "ui", "--stop")


def test_stale_pid_file_of_another_process_is_not_killed(ui_cli_env) -> None:
    home = Path(ui_cli_env["KCLIP_HOME"])
    home.mkdir(parents=True)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (home / "ui-1.pid").write_text(str(bystander.pid))  # a reused pid: not an explorer
        assert "no explorer was running" in kclip(ui_cli_env, "ui", "--stop").stdout
        assert bystander.poll() is None
    finally:
        bystander.kill()

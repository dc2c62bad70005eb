"""One writer per KG: the write lock in Neo4j, between real processes (no mocks).

Holders are real `python` processes (a small script around ``kg_write_lock``, or `kclip load`);
they are killed with -9, frozen with SIGSTOP and run side by side against the session's Neo4j.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kg_data import triplet_counts, write_dataset, write_entities_only

from kclip.platform.errors import KGBusy
from kclip.platform.kg_lock import kg_write_lock

HOLDER = """
import sys, time
from kclip.platform.errors import KclipError
from kclip.platform.kg_lock import kg_write_lock
from kclip.platform.neo4j_client import open_graph_store
from kclip.platform.settings import get_settings

kg, seconds = sys.argv[1], float(sys.argv[2])
try:
    with open_graph_store(get_settings()) as store, kg_write_lock(store, kg, command="test holder", wait=0):
        print("held", flush=True)
        time.sleep(seconds)
except KclipError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(exc.exit_code)
"""


class Holder:
    """A real process holding a KG's write lock for ``seconds``."""

    def __init__(self, env: dict[str, str], kg: str, seconds: float, ttl_s: float | None = None):
        env = {**env, **({"KCLIP_LOCK_TTL_S": str(ttl_s)} if ttl_s else {})}
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, kg, str(seconds)], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.strip() == "held", self.proc.stderr.read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def holders():
    made: list[Holder] = []
    yield lambda *args, **kwargs: made.append(Holder(*args, **kwargs)) or made[-1]
    for holder in made:
        holder.kill()


@pytest.mark.parametrize("stale_holder", [False, True])
def test_of_many_simultaneous_takers_exactly_one_wins(graph_store, kg_name, stale_holder):
    if stale_holder:  # a lock whose holder stopped beating long ago (its TTL: 1 ms): all race to take it over
        owner = {"host": "elsewhere", "machine": "elsewhere", "pid": 1, "command": "gone", "ttl_ms": 1}
        graph_store.ensure_lock_schema()
        assert graph_store.try_lock_kg(kg_name, "stale-token", owner)["acquired"]
        time.sleep(0.1)
    start = threading.Barrier(8)
    won: list[bool] = []

    def take() -> None:
        start.wait()
        try:
            with kg_write_lock(graph_store, kg_name, wait=0):
                won.append(True)
                time.sleep(1.0)  # hold it while the others try
        except KGBusy:
            won.append(False)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(won) == [False] * 7 + [True]


def test_a_second_writer_is_refused_at_once_with_who_holds_it(graph_store, cli_env, kg_name, holders, tmp_path):
    holder = holders(cli_env, kg_name, 60)
    started = time.monotonic()
    with pytest.raises(KGBusy, match=rf"KG '{kg_name}' is being written by pid {holder.proc.pid} on host .* "
                                     r"\(test holder\) since .*gave up after waiting 0 s"):
        with kg_write_lock(graph_store, kg_name, wait=0):
            pass
    assert time.monotonic() - started < 5
    data = write_dataset(tmp_path / "kg", entities=10, triplets=20)
    cli = subprocess.run([sys.executable, "-m", "kclip", "load", "tsv", str(data), "--kg", kg_name, "--wait", "0"],
                         env=cli_env, capture_output=True, text=True, timeout=120)
    assert cli.returncode == KGBusy.exit_code == 73
    lines = cli.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: KG '{kg_name}' is being written by pid {holder.proc.pid}"), cli.stderr
    assert "Traceback" not in cli.stderr and not graph_store.has_entities(kg_name)


def test_a_waiting_writer_proceeds_when_the_holder_finishes(graph_store, cli_env, kg_name, holders):
    holders(cli_env, kg_name, 3)
    notes: list[str] = []
    started = time.monotonic()
    with kg_write_lock(graph_store, kg_name, wait=60, notify=notes.append):
        waited = time.monotonic() - started
    assert 1 < waited < 30
    assert "waiting (up to" in notes[0] and notes[-1] == f"KG {kg_name!r} is free now; writing"
    with kg_write_lock(graph_store, kg_name, wait=0):  # released on exit
        pass


def test_kill_9_of_a_holder_frees_its_lock_at_once_on_this_host(graph_store, cli_env, kg_name, holders):
    holder = holders(cli_env, kg_name, 600)  # the default TTL: 30 s
    holder.proc.kill()
    killed = time.monotonic()
    notes: list[str] = []
    with kg_write_lock(graph_store, kg_name, wait=60, notify=notes.append):
        took = time.monotonic() - killed
    print(f"lock of a holder killed with -9 taken over after {took:.2f} s (same host: its pid is gone)")
    assert took < 10 and any("is gone; taking its lock over" in n for n in notes)


def test_a_frozen_holder_loses_its_lock_after_its_ttl_and_says_so(graph_store, cli_env, kg_name, holders):
    holder = holders(cli_env, kg_name, 10, ttl_s=2)
    holder.proc.send_signal(signal.SIGSTOP)  # alive (its pid exists) but silent: only the TTL can free it
    frozen = time.monotonic()
    with kg_write_lock(graph_store, kg_name, wait=60):
        took = time.monotonic() - frozen
        print(f"lock of a frozen holder taken over after {took:.2f} s (TTL 2 s)")
        assert 1.5 < took < 15
        holder.proc.send_signal(signal.SIGCONT)  # it wakes, finds its lock gone, and must say so
        _, stderr = holder.proc.communicate(timeout=60)
    assert holder.proc.returncode == 1
    assert f"the write lock of KG {kg_name!r} was taken over by another process" in stderr


def _concurrent_loads(cli_env: dict[str, str], data: Path, kg: str) -> list[subprocess.CompletedProcess]:
    cmd = [sys.executable, "-m", "kclip", "load", "tsv", str(data), "--kg", kg, "--json"]
    procs = [subprocess.Popen(cmd, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    done = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=600)
        done.append(subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr))
    return done


def _assert_loaded_once(graph_store, kg: str, done: list[subprocess.CompletedProcess], triplets: int) -> None:
    for run in done:
        assert run.returncode == 0, run.stderr[-3000:]
    assert any("is being written by pid" in run.stderr for run in done)  # one waited for the other
    added = [json.loads(run.stdout[run.stdout.index("{"):])["triplets"]["added"] for run in done]
    assert sorted(added) == [0, triplets]
    assert triplet_counts(graph_store, kg) == (triplets, triplets)


def test_two_concurrent_loads_into_a_kg_with_entities_but_no_triplets_write_each_triplet_once(
        graph_store, cli_env, kg_name, tmp_path):
    data = write_dataset(tmp_path / "kg", entities=5000, triplets=20_000)
    write_entities_only(graph_store, kg_name, [f"e{i}" for i in range(5000)])
    done = _concurrent_loads(cli_env, data, kg_name)
    _assert_loaded_once(graph_store, kg_name, done, 20_000)
    assert graph_store.stats(kg_name).total_entities == 5000


@pytest.mark.slow
def test_two_concurrent_wn18rr_loads_into_the_worst_state_write_each_triplet_once(
        graph_store, cli_env, kg_name, wn18rr_dir):
    names = [line.split("\t", 1)[0] for line in (wn18rr_dir / "entity2text.txt").read_text().splitlines() if line]
    write_entities_only(graph_store, kg_name, names)
    done = _concurrent_loads(cli_env, wn18rr_dir, kg_name)
    _assert_loaded_once(graph_store, kg_name, done, 93_003)
    assert graph_store.stats(kg_name).triplets == {"train": 86835, "dev": 3034, "test": 3134}

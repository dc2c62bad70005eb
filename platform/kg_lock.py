"""One writer per KG: a write lock held in Neo4j itself, so it holds across machines sharing one Neo4j.

    with kg_write_lock(store, "wn18rr", command="kclip load tsv data/wn18rr --kg wn18rr", wait=600):
        ...  # write the KG's content

The lock is a ``(:KGLock {kg})`` node (unique on ``kg``) naming its holder: a random token, the
host, pid and command, since when, and a heartbeat on the server's clock, which a daemon thread
renews every ``ttl / 6`` seconds. Taking it is one Cypher statement under the node's write lock
(``cypher.TRY_LOCK_KG``), so exactly one of any number of takers wins. A holder that stops
renewing (killed with -9, frozen, cut off) leaves a stale lock: once its heartbeat is older than
the TTL the holder declared, the next taker takes it over; a holder on this machine whose pid is
gone is taken over at once. Waiters say who holds the KG every few seconds, and give up after
``wait`` seconds with ``KGBusy``.

The TTL defaults to 30 s; ``KCLIP_LOCK_TTL_S`` changes it (tests use a few seconds).
"""

from __future__ import annotations

import logging
import os
import shlex
import socket
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from kclip.platform.errors import KGBusy, KGLockLost
from kclip.platform.graph_store import GraphStore
from kclip.platform.processes import process_alive

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 30.0
DEFAULT_WAIT_S = 600.0
NOTE_EVERY_S = 5.0  # how often a waiter says it is still waiting
MAX_COMMAND_CHARS = 300


@dataclass(frozen=True)
class LockHolder:
    """Who holds a KG's write lock, as the lock node says."""

    kg: str
    token: str
    host: str
    machine: str
    pid: int
    command: str
    since: str  # ISO date-time, server clock
    age_s: float  # seconds since its last heartbeat

    def describe(self) -> str:
        since = self.since[:19].replace("T", " ") + " UTC" if self.since else "?"
        return f"KG {self.kg!r} is being written by pid {self.pid} on host {self.host} ({self.command}) since {since}"

    def is_dead_here(self) -> bool:
        """The holder ran on this machine (same kernel, same pid namespace) and its process is gone."""
        return self.machine == machine_id() and not _pid_alive(self.pid)


class KGWriteLock:
    """A KG's write lock for this process; use ``kg_write_lock`` rather than this directly."""

    def __init__(self, store: GraphStore, kg: str, command: str, ttl_s: float):
        self.store, self.kg, self.ttl_s = store, kg, ttl_s
        self.token = uuid.uuid4().hex
        self.owner = {"host": socket.gethostname(), "machine": machine_id(), "pid": os.getpid(),
                      "command": command[:MAX_COMMAND_CHARS], "ttl_ms": int(ttl_s * 1000)}
        self.lost = False  # another process took it over from us (we stalled past the TTL)
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def acquire(self, wait: float, notify: Callable[[str], None]) -> None:
        """Take the lock, waiting up to ``wait`` seconds for its holder; ``KGBusy`` after that."""
        deadline = time.monotonic() + wait
        noted = False
        next_note = time.monotonic()
        while True:
            holder = self._try()
            if holder is not None and holder.is_dead_here():
                notify(f"KG {self.kg!r}: the writer pid {holder.pid} on this host is gone; taking its lock over")
                holder = self._try(dead_token=holder.token)
            if holder is None:
                if noted:
                    notify(f"KG {self.kg!r} is free now; writing")
                self._start_heartbeat()
                return
            now = time.monotonic()
            if now >= deadline:
                raise KGBusy(f"{holder.describe()}; gave up after waiting {wait:.0f} s. Run again when it "
                             "has finished, or give --wait SECONDS to wait longer.")
            if now >= next_note:
                notify(f"{holder.describe()}; waiting (up to {deadline - now:.0f} s more)")
                noted, next_note = True, now + NOTE_EVERY_S
            time.sleep(min(self._poll_s, deadline - now))

    def release(self) -> None:
        """Stop the heartbeat and delete the lock node if it is still ours (best effort: if Neo4j is
        gone, the lock goes stale after the TTL, or at once for a taker on this machine)."""
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=1.0)  # a daemon: never wait out a heartbeat to a lost Neo4j
        try:
            self.store.release_kg_lock(self.kg, self.token, timeout=min(5.0, self.ttl_s))
        except Exception as exc:  # never mask the error that ended the work
            log.debug("releasing the write lock of KG %r failed: %s", self.kg, exc)

    @property
    def _poll_s(self) -> float:
        return min(1.0, self.ttl_s / 6)

    def _try(self, dead_token: str = "") -> LockHolder | None:
        """None when we hold the lock now; else who does."""
        state = self.store.try_lock_kg(self.kg, self.token, self.owner, dead_token)
        if state["acquired"]:
            return None
        return LockHolder(self.kg, state["token"], state["host"] or "?", state["machine"] or "", int(state["pid"] or 0),
                          state["command"] or "?", state["since"] or "", (state["age_ms"] or 0) / 1000)

    def _start_heartbeat(self) -> None:
        self._heartbeat = threading.Thread(target=self._beat, name=f"kclip-lock-{self.kg}", daemon=True)
        self._heartbeat.start()

    def _beat(self) -> None:
        interval = self.ttl_s / 6  # five missed beats still leave the lock ours
        while not self._stop.wait(interval):
            try:
                held = self.store.refresh_kg_lock(self.kg, self.token, timeout=interval)
            except Exception as exc:  # Neo4j away: the writer itself will say so
                log.debug("heartbeat of KG %r's write lock failed: %s", self.kg, exc)
                continue
            if not held:
                self.lost = True
                return


@contextmanager
def kg_write_lock(store: GraphStore, kg: str, command: str | None = None, wait: float = DEFAULT_WAIT_S, *,
                  ttl_s: float | None = None, notify: Callable[[str], None] | None = None) -> Iterator[KGWriteLock]:
    """Hold KG ``kg``'s write lock for the ``with`` block; see the module docstring.

    ``command`` names this process to waiters (default: this process's command line); ``wait``
    is how long to wait for another holder (0: refuse at once); ``notify`` receives the waiting
    messages (default: stderr). Raises ``KGBusy`` when the wait runs out, and ``KGLockLost`` at the
    end of the block if another process took the lock over meanwhile (this one stalled past its TTL).
    """
    store.ensure_lock_schema()
    lock = KGWriteLock(store, kg, command or current_command(), ttl_s or lock_ttl_s())
    lock.acquire(wait, notify or _to_stderr)
    try:
        yield lock
    finally:
        lock.release()
    if lock.lost:
        raise KGLockLost(f"the write lock of KG {kg!r} was taken over by another process while this one was "
                         f"writing (its heartbeat stalled for over {lock.ttl_s:.0f} s); run this command again "
                         "once the other writer has finished")


def lock_ttl_s() -> float:
    return float(os.environ.get("KCLIP_LOCK_TTL_S") or DEFAULT_TTL_S)


def current_command() -> str:
    """This process's command line, as a user would type it (``kclip load ...``)."""
    argv = sys.argv
    if argv and Path(argv[0]).name in ("kclip", "__main__.py"):  # `kclip ...` or `python -m kclip ...`
        return shlex.join(["kclip", *argv[1:]])
    return shlex.join(argv) or "python"


def machine_id() -> str:
    """Which processes' pids we can see: this kernel's boot and our pid namespace (containers have
    their own), falling back to the host name where /proc is missing."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return socket.gethostname()


def _pid_alive(pid: int) -> bool:
    return pid <= 0 or process_alive(pid)  # an unknown pid: never presume its holder dead


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)

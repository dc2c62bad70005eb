"""Opening a Neo4j driver from settings, with errors that say what to do."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterator, TypeVar

import neo4j
from neo4j.exceptions import AuthError, ServiceUnavailable, SessionExpired, TransientError

from kclip.platform.errors import GraphStoreError, Neo4jLost, Neo4jUnreachable
from kclip.platform.settings import Settings

if TYPE_CHECKING:
    from kclip.platform.graph_store import GraphStore

log = logging.getLogger(__name__)
T = TypeVar("T")

# How long a gone server takes to be reported: a dead host's TCP connect, a free connection from
# the pool, and the driver's retries of a transaction function. The driver's defaults (30, 60,
# 30 s) made a load that lost Neo4j take over a minute to say so. Retries back off 1, 2, 4 s and
# stop at the first check past RETRY_TIME_S, so 5 s means attempts at about 0, 1, 3 and 7 s:
# enough for deadlocks and blips, and a lost server is reported within about 10 s.
CONNECT_TIMEOUT_S = 5.0
ACQUIRE_TIMEOUT_S = 15.0
RETRY_TIME_S = 5.0


def _password(settings: Settings) -> str:
    if settings.uses_local_service:
        from kclip.platform.local_neo4j import login_password

        password = login_password(settings)
        if password is not None:
            return password
        raise GraphStoreError(
            f"no Neo4j password: the local service in {settings.neo4j_dir} has not been started yet. "
            "Run `kclip neo4j start`, or set KCLIP_NEO4J_URI and KCLIP_NEO4J_PASSWORD for your own Neo4j."
        )
    if settings.neo4j_password is None:
        raise GraphStoreError(f"KCLIP_NEO4J_PASSWORD is not set for the Neo4j at {settings.neo4j_uri}.")
    return settings.neo4j_password.get_secret_value()


def connect(settings: Settings) -> neo4j.Driver:
    """A verified driver for the Neo4j the settings point at."""
    driver = neo4j.GraphDatabase.driver(
        settings.bolt_uri,
        auth=(settings.neo4j_user, _password(settings)),
        max_connection_lifetime=3600,
        connection_timeout=CONNECT_TIMEOUT_S,
        connection_acquisition_timeout=ACQUIRE_TIMEOUT_S,
        max_transaction_retry_time=RETRY_TIME_S,
        # "property key not in the database" is normal on a fresh KG; it is not worth a warning.
        notifications_disabled_categories=["UNRECOGNIZED"],
    )
    try:
        driver.verify_connectivity()
    except AuthError:
        driver.close()
        raise GraphStoreError(
            f"Neo4j at {settings.bolt_uri} refused the password for user {settings.neo4j_user!r}; "
            "check KCLIP_NEO4J_USER / KCLIP_NEO4J_PASSWORD."
        ) from None
    except (ServiceUnavailable, OSError) as exc:
        driver.close()
        hint = "start it with `kclip neo4j start`" if settings.uses_local_service else "check KCLIP_NEO4J_URI"
        raise Neo4jUnreachable(f"Neo4j at {settings.bolt_uri} is not answering ({_one_line(exc)}); {hint}.") from None
    return driver


@contextmanager
def open_graph_store(settings: Settings) -> Iterator["GraphStore"]:
    """A GraphStore over a fresh verified driver, closed on exit."""
    from kclip.platform.graph_store import GraphStore

    driver = connect(settings)
    try:
        yield GraphStore(driver, settings.neo4j_database)
    finally:
        driver.close()


LOST = (ServiceUnavailable, SessionExpired)  # the server is gone (IncompleteCommit is a ServiceUnavailable)


@contextmanager
def reporting_lost_neo4j(what_was_done: Callable[[], str]) -> Iterator[None]:
    """Turn "Neo4j is gone" (once the driver's own retries gave up) into one ``Neo4jLost`` line that
    ends with ``what_was_done()``: how far the work got and how to finish it."""
    try:
        yield
    except LOST as exc:
        raise Neo4jLost(f"lost Neo4j ({exc.__class__.__name__}: {_one_line(exc)}); {what_was_done()}") from exc


def with_reconnect(fn: Callable[[], T], timeout: float = 300.0, what: str = "Neo4j read", then: str = "") -> T:
    """Run ``fn``, retrying while Neo4j is unreachable (a restart), for up to ``timeout`` seconds.

    The driver reconnects on its own once the server is back; reads are idempotent, so retrying
    the whole call loses and repeats nothing. Past the timeout: ``Neo4jLost``, its message ending
    with ``then`` (what to do once Neo4j is back).
    """
    deadline = time.monotonic() + timeout
    delay = 0.5
    warned = False
    while True:
        try:
            return fn()
        except (ServiceUnavailable, SessionExpired, TransientError, OSError, Neo4jUnreachable) as exc:
            if time.monotonic() > deadline:
                cause = f"{exc.__class__.__name__}: {_one_line(exc)}"
                raise Neo4jLost(f"{what}: Neo4j did not answer for {timeout:.0f} s ({cause})"
                                + (f"; {then}" if then else "")) from exc
            if not warned:  # once: a restart is worth a line, not a line per attempt
                log.warning("%s: Neo4j unreachable (%s); retrying for up to %.0f s",
                            what, exc.__class__.__name__, timeout)
                warned = True
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _one_line(exc: BaseException) -> str:
    """The driver's message on one line (some span several)."""
    return " ".join(str(exc).split()) or exc.__class__.__name__

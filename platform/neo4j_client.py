"""Opening a Neo4j driver from settings, with errors that say what to do."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterator, TypeVar

import neo4j
from neo4j.exceptions import AuthError, ServiceUnavailable, SessionExpired, TransientError

from kclip.platform.errors import GraphStoreError
from kclip.platform.settings import Settings

if TYPE_CHECKING:
    from kclip.platform.graph_store import GraphStore

log = logging.getLogger(__name__)
T = TypeVar("T")


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
        connection_acquisition_timeout=60,
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
        raise GraphStoreError(f"Neo4j at {settings.bolt_uri} is not answering ({exc}); {hint}.") from None
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


def with_reconnect(fn: Callable[[], T], timeout: float = 300.0, what: str = "Neo4j read") -> T:
    """Run ``fn``, retrying while Neo4j is unreachable (a restart), for up to ``timeout`` seconds.

    The driver reconnects on its own once the server is back; reads are idempotent, so retrying
    the whole call loses and repeats nothing.
    """
    deadline = time.monotonic() + timeout
    delay = 0.5
    while True:
        try:
            return fn()
        except (ServiceUnavailable, SessionExpired, TransientError, OSError) as exc:
            if time.monotonic() > deadline:
                raise GraphStoreError(f"{what} failed: Neo4j unreachable for {timeout:.0f}s ({exc})") from exc
            log.warning("%s: Neo4j unreachable (%s); retrying in %.1fs", what, exc.__class__.__name__, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

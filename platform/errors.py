"""One exception hierarchy for kclip. Messages say what went wrong, where, and how to fix it.

Each class carries the exit code the CLI ends with (``exit_code``), so scripts can tell a bad
input (1) from a temporary failure worth retrying: Neo4j lost mid-way (75, ``EX_TEMPFAIL``) or a
KG being written by another process (73).
"""

from __future__ import annotations

from pathlib import Path


class KclipError(Exception):
    """Base of every error kclip raises on purpose; the CLI prints these without a traceback."""

    exit_code: int = 1


class ConfigError(KclipError):
    """Settings or a config file failed validation."""


class ServiceError(KclipError):
    """The local Neo4j service could not be installed, started or stopped."""


class GraphStoreError(KclipError):
    """Neo4j is unreachable, refused our credentials, or a query failed."""


class Neo4jUnreachable(GraphStoreError):
    """Neo4j does not answer at its address: not started, a wrong URI, or down (a restart)."""


class Neo4jLost(GraphStoreError):
    """Neo4j went away mid-work and did not come back within the driver's retries (or our wait).

    Everything kclip writes is idempotent, so the message says how far it got and that running
    the same command again, once Neo4j is back, finishes the work.
    """

    exit_code = 75  # EX_TEMPFAIL: try again later


class KGBusy(KclipError):
    """Another process holds a KG's write lock and did not release it within the wait."""

    exit_code = 73


class KGLockLost(KclipError):
    """This process's write lock on a KG was taken over (its heartbeat stopped for longer than the TTL)."""


class InputError(KclipError):
    """Bad input data: names the file, the line (when there is one), and what was expected."""

    def __init__(self, path: str | Path, line: int | None, problem: str):
        self.path = str(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}")


class LoadRefused(KclipError):
    """A load found bad input in strict mode; nothing was written."""

    def __init__(self, errors: list[InputError], total: int):
        self.errors = errors
        self.total = total
        shown = "\n".join(f"  {e}" for e in errors)
        more = f"\n  ... and {total - len(errors)} more" if total > len(errors) else ""
        super().__init__(
            f"load refused, {total} bad row(s); the graph was left unchanged:\n{shown}{more}\n"
            "Fix the input, or pass --skip-bad to load the good rows and write a rejects report."
        )


class NotFoundError(KclipError):
    """A named thing (KG, entity, run, config) does not exist."""

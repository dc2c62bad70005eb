"""A project-managed local Neo4j Community server: ``kclip neo4j start | stop | status``.

How it runs. Neo4j is not packaged for Debian or PyPI, but Neo4j Community is on Maven Central.
The first ``start`` resolves ``org.neo4j:neo4j`` (pinned: ``NEO4J_VERSION``) with Maven into
``settings.cache_dir / "neo4j-<version>/lib"``, shared by every state dir. The artifact pulls in
``neo4j-server``, so we run the real server entry point, ``org.neo4j.server.CommunityEntryPoint``,
with ``java -cp "<lib>/*"`` and a ``neo4j.conf`` we write under the state dir. That is the same
code path as a packaged Neo4j (``bin/neo4j console`` ends in that class), reads a normal config
file and logs to ``logs/neo4j.log`` / ``debug.log``, so no launcher of our own was needed; the
embedded ``DatabaseManagementServiceBuilder`` route would have meant compiling Java and
reimplementing the config, and was not needed.

State dir (``settings.neo4j_dir``, default ``~/.kclip/neo4j``, mode 0700)::

    conf/neo4j.conf   rewritten at each launch from settings (Bolt port, heap, page cache)
    data/             databases and transaction logs; survives stop/start
    logs/             neo4j.log, debug.log, console.log (the JVM's own stdout/stderr)
    import/           LOAD CSV FROM 'file:///x.csv' reads here
    plugins/          jars here join the classpath (as in a packaged Neo4j)
    password          generated once (mode 0600) unless KCLIP_NEO4J_PASSWORD is set
    neo4j.pid         the detached JVM

Bolt listens on 127.0.0.1 only, HTTP is off, authentication is on. The password is set as the
initial password with Neo4j's admin tool before the first start, so clients never see a
"password change required" state. The Docker path (``neo4j:5.26-community``) must use the
same version and the same settings as ``_server_settings``.

Memory: heap and page cache are ``KCLIP_NEO4J_HEAP`` / ``KCLIP_NEO4J_PAGECACHE``, ``auto`` by
default, which sizes them to the machine at each start (the rule: ``platform/neo4j_memory.py``).
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from neo4j import GraphDatabase
from neo4j.exceptions import AuthError, Neo4jError, ServiceUnavailable, SessionExpired, TransientError
from pydantic import BaseModel

from kclip.platform.errors import ServiceError
from kclip.platform.neo4j_memory import MemorySizes, resolve
from kclip.platform.processes import process_alive
from kclip.platform.settings import Settings

NEO4J_VERSION = "5.26.30"  # newest 5.26 (LTS, runs on Java 17) on Maven Central; match docker-compose
TX_LOG_RETENTION = "1G size"  # per database
MIN_JAVA = 17
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0
SERVICE_FILES = Path(__file__).parent / "neo4j_service"
ENTRY_POINT = "org.neo4j.server.CommunityEntryPoint"
INSTALL_HINT = (
    "install OpenJDK 17 (Debian/Ubuntu: `sudo apt-get install openjdk-17-jre-headless`, "
    "macOS: `brew install openjdk@17`) or point JAVA_HOME at a Java 17+ installation"
)

# The JVM flags a packaged Neo4j 5.26 ships in neo4j.conf, minus -XX:+AlwaysPreTouch (it touches
# the whole heap at start, slowing it for no gain on a dev machine). No TieredStopAtLevel: that
# would make Cypher's compiled code slower for the life of the server.
JVM_OPTIONS = (
    "-XX:+UseG1GC",
    "-XX:-OmitStackTraceInFastThrow",
    "-XX:+UnlockExperimentalVMOptions",
    "-XX:+TrustFinalNonStaticFields",
    "-XX:+DisableExplicitGC",
    "-Djdk.nio.maxCachedBufferSize=1024",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dlog4j2.disable.jmx=true",
    "-Dfile.encoding=UTF-8",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--enable-native-access=ALL-UNNAMED",
)


class ServiceStatus(BaseModel):
    running: bool
    pid: int | None
    bolt_uri: str
    state_dir: Path
    version: str
    password_file: Path | None
    heap: str  # of the running server, else what a start would use
    pagecache: str


# ---------------------------------------------------------------- public API


def status(settings: Settings) -> ServiceStatus:
    """Whether the local server for these settings is running; cheap (no Bolt round trip)."""
    state = settings.neo4j_dir
    pid = _running_pid(state)
    port = _configured_port(state) if pid is not None else None
    password_file = state / "password"
    memory = (_configured_memory(state) if pid is not None else None) or memory_sizes(settings)
    return ServiceStatus(
        running=pid is not None,
        pid=pid,
        bolt_uri=_local_uri(port or settings.neo4j_bolt_port),
        state_dir=state,
        version=NEO4J_VERSION,
        password_file=password_file if password_file.is_file() else None,
        heap=memory.heap,
        pagecache=memory.pagecache,
    )


def start(settings: Settings) -> ServiceStatus:
    """Start the server detached (it outlives this process); return once Bolt accepts our login."""
    state = _prepare_state_dir(settings.neo4j_dir)
    with _locked(state / ".lock"):  # two `kclip neo4j start` at once must not launch two JVMs
        pid = _running_pid(state)
        if pid is not None:
            port = _configured_port(state) or settings.neo4j_bolt_port
            password = login_password(settings)
            if password is None:
                raise ServiceError(f"Neo4j runs from {state} but its password is unknown: set KCLIP_NEO4J_PASSWORD")
            _wait_for_bolt(settings, pid, port, time.monotonic() + START_TIMEOUT_S, password)
            return status(settings)
        java = _find_java()
        _check_port_free(settings.neo4j_bolt_port)
        lib = _ensure_installed(settings.cache_dir)
        password = _password_for_start(settings)
        memory = memory_sizes(settings)
        _write_config(settings, memory)
        _set_initial_password_once(java, lib, state, password)
        t0 = time.monotonic()
        pid = _launch(java, lib, settings, memory)
        try:
            _wait_for_bolt(settings, pid, settings.neo4j_bolt_port, t0 + START_TIMEOUT_S, password)
        except BaseException:
            _terminate(pid, quiet=True)  # a half-started server would make the next start "already running"
            (state / "neo4j.pid").unlink(missing_ok=True)
            raise
        _say(f"Neo4j {NEO4J_VERSION} is up at {_local_uri(settings.neo4j_bolt_port)} ({time.monotonic() - t0:.1f} s)")
        return status(settings)


def stop(settings: Settings) -> bool:
    """Shut the server down cleanly; returns whether one was running."""
    state = settings.neo4j_dir
    if not state.is_dir():
        return False
    with _locked(state / ".lock"):
        pid = _running_pid(state)
        if pid is None:
            return False
        _terminate(pid, quiet=False)
        (state / "neo4j.pid").unlink(missing_ok=True)
        return True


def memory_sizes(settings: Settings) -> MemorySizes:
    """Heap and page cache a start would use now: the settings, ``auto`` sized to this machine."""
    return resolve(settings.neo4j_heap, settings.neo4j_pagecache)


def login_password(settings: Settings) -> str | None:
    """The password to log in with: KCLIP_NEO4J_PASSWORD if set, else the stored one (never generates)."""
    if settings.neo4j_password is not None:
        return settings.neo4j_password.get_secret_value()
    return stored_password(settings)


def stored_password(settings: Settings) -> str | None:
    """The password the local service generated, or None before the first start."""
    try:
        return (settings.neo4j_dir / "password").read_text().strip() or None
    except FileNotFoundError:
        return None


# ---------------------------------------------------------------- processes


def _running_pid(state: Path) -> int | None:
    """The pid in the pid file if that process is alive and is our server; else None (stale file)."""
    try:
        pid = int((state / "neo4j.pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if process_alive(pid) and _is_our_server(pid, state) else None


def _is_our_server(pid: int, state: Path) -> bool:
    """Guards against pid reuse: after a reboot the old pid may belong to anything."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.parent.parent.is_dir():
        try:
            args = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            return False
    else:  # no /proc (macOS)
        out = subprocess.run(["ps", "-p", str(pid), "-o", "command="], capture_output=True, text=True, check=False)
        args = out.stdout.split()
    return ENTRY_POINT in args and f"--home-dir={state}" in args


def _launch(java: str, lib: Path, settings: Settings, memory: MemorySizes) -> int:
    """Start the JVM in its own session, output appended to logs/console.log; returns its pid."""
    state = settings.neo4j_dir
    argv = [
        java,
        f"-Xms{memory.heap}",
        f"-Xmx{memory.heap}",
        *JVM_OPTIONS,
        "-cp",
        f"{lib}/*{os.pathsep}{state / 'plugins'}/*",
        ENTRY_POINT,
        f"--home-dir={state}",
        f"--config-dir={state / 'conf'}",
    ]
    console = str(state / "logs" / "console.log")
    # posix_spawn rather than subprocess.Popen: there is no Popen object left to warn that its
    # child "is still running" when this process exits, which is the point of a detached server.
    pid = os.posix_spawn(
        java,
        argv,
        {**os.environ, "NEO4J_HOME": str(state), "NEO4J_CONF": str(state / "conf")},
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, console, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ],
        setsid=True,  # own session: Ctrl-C in the terminal that ran `kclip neo4j start` doesn't reach it
    )
    (state / "neo4j.pid").write_text(f"{pid}\n")
    _say(f"starting Neo4j {NEO4J_VERSION} (pid {pid}, heap {memory.heap}, page cache {memory.pagecache}); "
         f"logs in {state / 'logs'}")
    return pid


def _terminate(pid: int, quiet: bool) -> None:
    """SIGTERM (Neo4j checkpoints and exits), then SIGKILL if it has not exited in time."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return
        time.sleep(0.2)
    if not quiet:
        _say(f"warning: Neo4j (pid {pid}) did not exit within {STOP_TIMEOUT_S:.0f} s of SIGTERM; killing it")
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)


def _wait_for_bolt(settings: Settings, pid: int, port: int, deadline: float, password: str) -> None:
    """Poll until `RETURN 1` succeeds with our credentials; fail fast if the JVM dies or auth fails."""
    uri, auth = _local_uri(port), (settings.neo4j_user, password)
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        if not process_alive(pid):
            raise ServiceError(f"Neo4j exited during start-up.\n{_log_tail(settings.neo4j_dir)}")
        if _port_open(port):  # cheap TCP check first; the driver is slow to give up on a closed port
            try:
                with GraphDatabase.driver(uri, auth=auth, connection_timeout=3) as driver, driver.session() as session:
                    session.run("RETURN 1").consume()
                return
            except AuthError:
                raise ServiceError(_auth_hint(settings)) from None
            except (ServiceUnavailable, SessionExpired, TransientError, OSError) as exc:
                last_error = str(exc)  # still starting: Bolt is up before the databases are
            except Neo4jError as exc:
                raise ServiceError(f"Neo4j at {uri} answered with an error: {exc}") from None
        time.sleep(0.5)
    raise ServiceError(
        f"Neo4j did not answer on {uri} within {START_TIMEOUT_S:.0f} s ({last_error}).\n{_log_tail(settings.neo4j_dir)}"
    )


def _auth_hint(settings: Settings) -> str:
    return (
        f"Neo4j in {settings.neo4j_dir} refused the password for user {settings.neo4j_user!r}. Its password "
        "was set when it first started; if KCLIP_NEO4J_PASSWORD (or KCLIP_NEO4J_USER) changed since, set "
        f"it back (the generated one is in {settings.neo4j_dir / 'password'}), or remove "
        f"{settings.neo4j_dir / 'data'} to start over with an empty database."
    )


# ---------------------------------------------------------------- installation


def _find_java() -> str:
    """The java binary (JAVA_HOME first, as Neo4j's own scripts do), checked to be 17 or newer."""
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not java or not os.access(java, os.X_OK):
        where = f"JAVA_HOME={java_home} has no bin/java" if java_home else "no `java` on PATH"
        raise ServiceError(f"Neo4j {NEO4J_VERSION} needs Java {MIN_JAVA} or newer, but {where}; {INSTALL_HINT}.")
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        raise ServiceError(f"could not tell the version of {java} (`java -version` said {out.stderr.strip()!r}).")
    major = int(match[2] or 0) if match[1] == "1" else int(match[1])  # "1.8.0" is Java 8
    if major < MIN_JAVA:
        raise ServiceError(
            f"Neo4j {NEO4J_VERSION} needs Java {MIN_JAVA} or newer, but {java} is Java {major}; {INSTALL_HINT}."
        )
    return java


def _ensure_installed(cache_dir: Path) -> Path:
    """Neo4j's jars in the shared cache, fetched with Maven once; returns the lib folder."""
    home = cache_dir / f"neo4j-{NEO4J_VERSION}"
    lib, marker = home / "lib", home / ".complete"
    if marker.is_file():
        return lib
    home.mkdir(parents=True, exist_ok=True)
    with _locked(home / ".lock"):  # another process may be downloading right now
        if not marker.is_file():
            _maven_copy(home, lib)
            marker.write_text(f"{NEO4J_VERSION}\n")  # only after success: an interrupted download is redone
    return lib


def _maven_copy(home: Path, lib: Path) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServiceError(
            f"Maven (`mvn`) is needed once to download Neo4j {NEO4J_VERSION} from Maven Central, and is not on "
            "PATH; install it (Debian/Ubuntu: `sudo apt-get install maven`, macOS: `brew install maven`)."
        )
    shutil.rmtree(lib, ignore_errors=True)  # leftovers of an interrupted download
    pom = home / "pom.xml"
    shutil.copyfile(SERVICE_FILES / "pom.xml", pom)  # mvn may write next to its pom; site-packages may be read-only
    cmd = [
        mvn, "-B", "-Dstyle.color=never", "-f", str(pom), f"-Dneo4j.version={NEO4J_VERSION}",
        "dependency:copy-dependencies", f"-DoutputDirectory={lib}", "-DincludeScope=runtime",
    ]  # fmt: skip
    _say(f"downloading Neo4j Community {NEO4J_VERSION} from Maven Central into {home} (once; ~130 MB)")
    t0 = time.monotonic()
    rc, tail = _run_with_progress(cmd, cwd=home)
    if rc != 0:
        raise ServiceError(
            f"Maven could not download Neo4j {NEO4J_VERSION} (exit {rc}); check the network and "
            "~/.m2/settings.xml (proxy, mirror). Maven's last lines:\n" + "\n".join(tail)
        )
    _say(f"Neo4j {NEO4J_VERSION} installed ({len(list(lib.glob('*.jar')))} jars, {time.monotonic() - t0:.0f} s)")


def _run_with_progress(cmd: list[str], cwd: Path) -> tuple[int, list[str]]:
    """Run mvn, reporting a count of fetched files every few seconds; returns (exit code, last lines)."""
    tail: deque[str] = deque(maxlen=30)
    fetched, last_report = 0, time.monotonic()
    with subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = re.sub(r"\x1b\[[0-9;]*m", "", raw).rstrip()  # Maven 3.8 emits colour codes even with -B
            if line:
                tail.append(line)
            fetched += "Downloaded from" in line  # "[INFO] Downloaded from central: <url> (...)"
            if time.monotonic() - last_report > 5:
                _say(f"  ... {fetched} files downloaded so far")
                last_report = time.monotonic()
    return proc.returncode, list(tail)


# ---------------------------------------------------------------- state dir, config, password


def _prepare_state_dir(state: Path) -> Path:
    state.mkdir(mode=0o700, parents=True, exist_ok=True)  # holds the password and a password hash
    for sub in ("conf", "data", "logs", "import", "plugins", "run"):
        (state / sub).mkdir(exist_ok=True)
    return state


def _server_settings(settings: Settings, memory: MemorySizes) -> dict[str, str]:
    """neo4j.conf for the local server. Docker users get the same through NEO4J_* variables."""
    state = settings.neo4j_dir
    return {
        "server.directories.data": str(state / "data"),
        "server.directories.logs": str(state / "logs"),
        "server.directories.import": str(state / "import"),
        "server.directories.plugins": str(state / "plugins"),
        "server.directories.run": str(state / "run"),
        "server.default_listen_address": "127.0.0.1",  # nothing reachable from other machines
        "server.bolt.enabled": "true",
        "server.bolt.listen_address": f"127.0.0.1:{settings.neo4j_bolt_port}",
        "server.http.enabled": "false",
        "server.https.enabled": "false",
        "dbms.security.auth_enabled": "true",
        "dbms.security.allow_csv_import_from_file_urls": "true",  # LOAD CSV from import/ (benchmarks)
        "server.memory.heap.initial_size": memory.heap,  # informational (and for status): we pass -Xms/-Xmx
        "server.memory.heap.max_size": memory.heap,
        "server.memory.pagecache.size": memory.pagecache,
        "dbms.usage_report.enabled": "false",  # no phoning home
        # Transaction logs only serve crash recovery here (no cluster; Community has no online
        # backup). Neo4j keeps 2 days of them by default: 8.3 GB beside a 0.4 GB store after a day
        # of benchmark loads and drops on the dev machine. Old files go at each checkpoint.
        "db.tx_log.rotation.retention_policy": TX_LOG_RETENTION,
        # Netty's graceful-shutdown quiet period (internal setting, integer seconds, default 5) is
        # spent twice after the databases are already checkpointed and closed: 10 s of every stop.
        "internal.dbms.bolt.netty_server_shutdown_quiet_period": "0",
    }


def _write_config(settings: Settings, memory: MemorySizes) -> None:
    lines = ["# Written by kclip at each `kclip neo4j start`; edits here are overwritten.\n"]
    lines += [f"{key}={value}\n" for key, value in _server_settings(settings, memory).items()]
    (settings.neo4j_dir / "conf" / "neo4j.conf").write_text("".join(lines))


def _password_for_start(settings: Settings) -> str:
    """The login password, generated and stored (0600) the first time there is none."""
    known = login_password(settings)
    if known is not None:
        return known
    password = secrets.token_urlsafe(24)
    # O_EXCL + 0o600 at creation: the file is never readable by others, not even for a moment.
    fd = os.open(settings.neo4j_dir / "password", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    return password


def _set_initial_password_once(java: str, lib: Path, state: Path, password: str) -> None:
    """`neo4j-admin dbms set-initial-password`, before the system database first exists."""
    if (state / "data" / "databases" / "system").exists():
        return  # initialised already: the password lives in the system database now
    # The password goes in a 0600 argument file (java expands @file), not on the command line,
    # where `ps` would show it to every user of the machine.
    argfile = state / "run" / "initial-password.args"
    argfile.unlink(missing_ok=True)
    quoted = '"' + password.replace("\\", "\\\\").replace('"', '\\"') + '"'
    fd = os.open(argfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        # `--` ends the options: a password starting with '-' (1 in 64 generated ones) is not an option.
        f.write(f"org.neo4j.cli.AdminTool dbms set-initial-password -- {quoted}\n")
    env = {**os.environ, "NEO4J_HOME": str(state), "NEO4J_CONF": str(state / "conf")}
    try:
        cmd = [java, "-cp", f"{lib}/*", f"@{argfile}"]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    finally:
        argfile.unlink(missing_ok=True)
    if out.returncode != 0:
        raise ServiceError(
            f"could not set Neo4j's initial password (exit {out.returncode}): {(out.stdout + out.stderr).strip()}"
        )


# ---------------------------------------------------------------- small helpers


def _local_uri(port: int) -> str:
    return f"bolt://127.0.0.1:{port}"


def _configured_port(state: Path) -> int | None:
    """The Bolt port the running server was launched with (settings may have changed since)."""
    port = _configured(state, r"server\.bolt\.listen_address=.*:(\d+)")
    return int(port) if port else None


def _configured_memory(state: Path) -> MemorySizes | None:
    """The heap and page cache the running server was launched with (``auto`` may differ now)."""
    heap = _configured(state, r"server\.memory\.heap\.max_size=(\S+)")
    pagecache = _configured(state, r"server\.memory\.pagecache\.size=(\S+)")
    return MemorySizes(heap, pagecache) if heap and pagecache else None


def _configured(state: Path, setting: str) -> str | None:
    """The value a neo4j.conf line matching ``setting`` (a regex with one group) holds, if any."""
    try:
        text = (state / "conf" / "neo4j.conf").read_text()
    except FileNotFoundError:
        return None
    match = re.search(rf"^{setting}\s*$", text, re.MULTILINE)
    return match[1] if match else None


def _check_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR as Neo4j (netty) sets it: TIME_WAIT leftovers are fine, a live listener is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise ServiceError(
                f"port {port} on 127.0.0.1 is already in use by another program ({exc.strerror}); stop it, "
                "or choose another port with KCLIP_NEO4J_BOLT_PORT."
            ) from None


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _log_tail(state: Path, lines: int = 30) -> str:
    """The last lines of neo4j.log and of the JVM's console output, for error messages."""
    parts = []
    for name in ("neo4j.log", "console.log"):
        path = state / "logs" / name
        if path.is_file() and path.stat().st_size:
            last = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- last lines of {path}:\n" + "\n".join(last))
    return "\n".join(parts) or f"(no log output in {state / 'logs'})"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _say(message: str) -> None:
    """Progress for a human: stderr, so stdout stays clean for machine-readable output."""
    print(message, file=sys.stderr, flush=True)

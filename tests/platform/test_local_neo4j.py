"""The local Neo4j service, against a real Neo4j Community server (no mocks).

One server is started for the module in a temporary state dir on a free port; the Neo4j jars come
from the real shared cache (``Settings().cache_dir``), so the Maven download happens once per
machine. The failure-path tests at the bottom never start a JVM.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import time
from pathlib import Path

import pytest
from neo4j import GraphDatabase
from neo4j.exceptions import AuthError

from kclip.platform import local_neo4j
from kclip.platform.errors import ServiceError
from kclip.platform.settings import Settings
from ports import free_port

LOOPBACK_HEX = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}



def _settings(state_dir: Path, home: Path | None = None, port: int | None = None) -> Settings:
    return Settings(
        home=home or Settings().home,  # the real cache, shared with every other state dir
        neo4j_state_dir=state_dir,
        neo4j_bolt_port=port or free_port(),
        neo4j_user="neo4j",
        neo4j_password=None,  # exercise the generated, stored password
        neo4j_heap="512m",
        neo4j_pagecache="64m",
    )


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory):
    settings = _settings(tmp_path_factory.mktemp("neo4j") / "state")
    local_neo4j.start(settings)
    yield settings
    local_neo4j.stop(settings)
    assert not local_neo4j.status(settings).running


def _driver(settings: Settings, password: str | None = None):
    password = password or local_neo4j.stored_password(settings)
    return GraphDatabase.driver(local_neo4j.status(settings).bolt_uri, auth=("neo4j", password))


def test_start_reports_running(service: Settings):
    st = local_neo4j.status(service)
    assert st.running and st.pid is not None
    assert st.bolt_uri == f"bolt://127.0.0.1:{service.neo4j_bolt_port}"
    assert st.state_dir == service.neo4j_dir
    assert st.version == local_neo4j.NEO4J_VERSION
    with _driver(service) as driver:
        record = driver.execute_query("CALL dbms.components() YIELD versions, edition RETURN *").records[0]
    assert record["versions"] == [local_neo4j.NEO4J_VERSION] and record["edition"] == "community"


def test_start_is_idempotent(service: Settings):
    before = local_neo4j.status(service)
    t0 = time.monotonic()
    after = local_neo4j.start(service)
    assert after.pid == before.pid
    assert time.monotonic() - t0 < 5


def test_password_file_is_private(service: Settings):
    st = local_neo4j.status(service)
    assert st.password_file == service.neo4j_dir / "password"
    assert stat.S_IMODE(st.password_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(service.neo4j_dir.stat().st_mode) == 0o700
    assert local_neo4j.stored_password(service) == st.password_file.read_text().strip()


def test_wrong_password_is_refused(service: Settings):
    with _driver(service, password="not-the-password") as driver, pytest.raises(AuthError):
        driver.execute_query("RETURN 1")


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads listening sockets from Linux /proc")
def test_bolt_listens_on_loopback_only(service: Settings):
    listening = []
    for table in ("tcp", "tcp6"):
        for line in (Path("/proc/net") / table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            host, port = local.split(":")
            if state == "0A" and int(port, 16) == service.neo4j_bolt_port:  # 0A: LISTEN
                listening.append(host)
    assert listening and set(listening) <= LOOPBACK_HEX


def test_transaction_logs_are_bounded(service: Settings):
    # Neo4j's default keeps two days of them: gigabytes after a day of loads and drops.
    with _driver(service) as driver:
        rows = driver.execute_query("SHOW SETTINGS YIELD name, value "
                                    "WHERE name = 'db.tx_log.rotation.retention_policy' RETURN value").records
    assert [r["value"] for r in rows] == [local_neo4j.TX_LOG_RETENTION] and local_neo4j.TX_LOG_RETENTION.endswith("size")


def test_load_csv_reads_the_import_dir(service: Settings):
    (service.neo4j_dir / "import" / "x.csv").write_text("id,name\n1,a\n2,b\n")
    with _driver(service) as driver:
        rows = driver.execute_query("LOAD CSV WITH HEADERS FROM 'file:///x.csv' AS row RETURN row.name AS name")
    assert [r["name"] for r in rows.records] == ["a", "b"]


def test_data_survives_stop_and_start(service: Settings):
    with _driver(service) as driver:
        driver.execute_query("CREATE (:Probe {id: 'survives-restart'})")
    assert local_neo4j.stop(service) is True
    assert not local_neo4j.status(service).running
    assert local_neo4j.stop(service) is False
    # A stale pid file naming a live process that is not our server (pid reuse) is ignored.
    (service.neo4j_dir / "neo4j.pid").write_text(f"{os.getpid()}\n")
    assert not local_neo4j.status(service).running
    assert local_neo4j.start(service).running
    with _driver(service) as driver:
        records = driver.execute_query("MATCH (p:Probe {id: 'survives-restart'}) RETURN count(p) AS n").records
    assert records[0]["n"] == 1


# ---------------------------------------------------------------- failure paths (no JVM started)


def test_port_in_use_is_refused(tmp_path: Path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        settings = _settings(tmp_path / "state", home=tmp_path / "home", port=holder.getsockname()[1])
        with pytest.raises(ServiceError, match="already in use"):
            local_neo4j.start(settings)


def test_missing_java_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no java anywhere
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(ServiceError, match="no `java` on PATH.*OpenJDK 17"):
        local_neo4j.start(_settings(tmp_path / "state", home=tmp_path / "home"))


def test_old_java_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    java = tmp_path / "bin" / "java"
    java.parent.mkdir()
    java.write_text("#!/bin/sh\necho 'java version \"1.8.0_292\"' >&2\n")
    java.chmod(0o755)
    monkeypatch.setenv("PATH", str(java.parent))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(ServiceError, match="is Java 8.*OpenJDK 17"):
        local_neo4j.start(_settings(tmp_path / "state", home=tmp_path / "home"))


def test_missing_maven_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    real_java = shutil.which("java")
    if real_java is None:
        pytest.skip("needs a real java to get past the Java check")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "java").symlink_to(real_java)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # java but no mvn
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(ServiceError, match="Maven .*apt-get install maven"):
        local_neo4j.start(_settings(tmp_path / "state", home=tmp_path / "home"))  # empty cache: must download

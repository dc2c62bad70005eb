"""Settings validation: clear errors that name the variable to fix."""

import pytest

from kclip.platform.errors import ConfigError
from kclip.platform.settings import load_settings


def test_defaults_use_the_local_service(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for name in ("KCLIP_NEO4J_URI", "KCLIP_HOME", "KCLIP_NEO4J_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    s = load_settings()
    assert s.uses_local_service and s.bolt_uri == "bolt://127.0.0.1:7687"
    assert s.neo4j_dir == s.home / "neo4j" and s.registry.startswith("sqlite:///")


def test_env_and_dotenv(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("KCLIP_NEO4J_URI=bolt://db:7687\nKCLIP_NEO4J_DATABASE=kg\n")
    monkeypatch.setenv("KCLIP_NEO4J_DATABASE", "fromenv")
    s = load_settings()
    assert s.neo4j_uri == "bolt://db:7687" and not s.uses_local_service
    assert s.neo4j_database == "fromenv"  # the environment wins over .env


@pytest.mark.parametrize("var, value, message", [
    ("KCLIP_NEO4J_URI", "http://localhost:7474", "KCLIP_NEO4J_URI"),
    ("KCLIP_NEO4J_BOLT_PORT", "70000", "KCLIP_NEO4J_BOLT_PORT"),
    ("KCLIP_NEO4J_HEAP", "lots", "KCLIP_NEO4J_HEAP"),
])
def test_invalid_values_name_the_variable(monkeypatch, tmp_path, var, value, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=message):
        load_settings()

"""docker-compose.yml as far as this machine can check it (no container engine here).

The file is parsed, the services the README names are there with the profiles and
dependencies it describes, the lookout config it mounts validates with the environment
compose gives it, and the Ollama model it pulls is the one lookout asks for.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from service.llm.provider import server_kind
from service.settings import load_settings
from tests.broker import REPO

COMPOSE = REPO / "docker-compose.yml"


def services() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text())["services"])


def _expand(value: str) -> str:
    """Compose's ${NAME:-default} with nothing set in the environment."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_default_profile_runs_the_broker_and_lookout():
    s = services()
    assert "profiles" not in s["mosquitto"] and "profiles" not in s["lookout"]
    assert s["lookout"]["depends_on"]["mosquitto"] == {"condition": "service_healthy"}
    assert s["lookout"]["healthcheck"]["test"][:2] == ["CMD", "lookout"]


def test_the_ollama_profile_pulls_a_model_before_lookout_starts():
    s = services()
    assert s["ollama"]["profiles"] == ["ollama"] and s["ollama-pull"]["profiles"] == ["ollama"]
    assert s["ollama"]["healthcheck"]["test"] == ["CMD", "ollama", "list"]
    assert s["ollama-pull"]["depends_on"]["ollama"] == {"condition": "service_healthy"}
    assert s["ollama-pull"]["environment"]["OLLAMA_HOST"] == "ollama:11434"
    dep = s["lookout"]["depends_on"]["ollama-pull"]
    assert dep == {"condition": "service_completed_successfully", "required": False}


def test_lookout_is_pointed_at_the_ollama_it_pulls(monkeypatch):
    s = services()
    env = {k: _expand(str(v)) for k, v in s["lookout"]["environment"].items()}
    mount = next(v for v in s["lookout"]["volumes"] if v.endswith(":/config/lookout.yml:ro"))
    config = REPO / mount.split(":", 1)[0]
    for name, value in env.items():
        if name != "LOOKOUT_CONFIG":
            monkeypatch.setenv(name, value)
    settings = load_settings(config)
    provider = settings.llm.providers["local"]
    pulled = _expand(s["ollama-pull"]["entrypoint"][-1])
    assert provider.model == pulled == "qwen3-vl:4b"
    assert provider.base_url == "http://ollama:11434/v1"
    assert set(provider.roles) == {"chat", "vision"} and provider.supports_vision
    assert server_kind(provider) == "ollama"
    assert settings.mqtt.host == "mosquitto"
    assert settings.store.url.startswith("sqlite:////data/")


def test_the_cluster_profile_runs_postgresql_and_two_workers(monkeypatch):
    s = services()
    assert s["postgres"]["profiles"] == ["cluster"]
    assert s["postgres"]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    workers = [
        name for name, svc in s.items() if svc.get("profiles") == ["cluster"] and name != "postgres"
    ]
    assert workers == ["lookout-1", "lookout-2"]
    names = set()
    for name in workers:
        svc = s[name]
        assert svc["depends_on"]["postgres"] == {"condition": "service_healthy"}
        assert svc["depends_on"]["mosquitto"] == {"condition": "service_healthy"}
        env = {k: _expand(str(v)) for k, v in svc["environment"].items()}
        mount = next(v for v in svc["volumes"] if v.endswith(":/config/lookout.yml:ro"))
        with monkeypatch.context() as m:
            for key, value in env.items():
                if key != "LOOKOUT_CONFIG":
                    m.setenv(key, value)
            settings = load_settings(REPO / mount.split(":", 1)[0])
        assert settings.cluster.enabled
        assert settings.store.url == "postgresql://lookout:lookout@postgres/lookout"
        assert settings.mqtt.host == "mosquitto"
        names.add(settings.cluster.worker_name)
    # Distinct fixed names: each restarted worker resumes its own broker session.
    assert names == {"lookout-1", "lookout-2"}


def test_without_postgresql_the_cluster_is_a_configuration_error(tmp_path):
    import pytest

    from service.settings import ConfigError

    config = tmp_path / "c.yml"
    config.write_text("cluster: {enabled: true}\n")
    with pytest.raises(ConfigError, match=r"cluster\.enabled needs store\.url on PostgreSQL"):
        load_settings(config, environ={})

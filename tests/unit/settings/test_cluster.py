import pytest
from pydantic import ValidationError

from service.settings import ClusterSettings, Settings, resolve_worker_name
from service.settings.names import NAME_RE


def test_cluster_is_off_by_default_and_needs_postgresql():
    assert Settings().cluster.enabled is False
    with pytest.raises(ValidationError, match=r"needs store\.url on PostgreSQL"):
        Settings.model_validate({"cluster": {"enabled": True}})
    ok = Settings.model_validate(
        {"cluster": {"enabled": True}, "store": {"url": "postgresql://u@h/db"}}
    )
    assert ok.cluster.takeover_s == 15


def test_worker_names_are_safe_topic_levels_and_fresh_by_default():
    assert resolve_worker_name(ClusterSettings(worker_name="w1")) == "w1"
    a, b = resolve_worker_name(ClusterSettings()), resolve_worker_name(ClusterSettings())
    assert NAME_RE.fullmatch(a) and a != b
    with pytest.raises(ValidationError):
        ClusterSettings(worker_name="has/slash")

"""Admission (size, unknown users, rate) and the reply-topic rules."""

from __future__ import annotations

import pytest

from service.mqtt.envelope import ErrorCode
from service.mqtt.limits import Admission
from service.mqtt.topics import TopicMap
from service.settings import load_settings


def admission(env: dict[str, str], now: list[float]) -> Admission:
    return Admission(load_settings(environ=env), clock=lambda: now[0])


def test_payload_size_names_the_setting():
    a = admission({"LOOKOUT_LIMITS__MAX_REQUEST_BYTES": "2048"}, [0.0])
    assert a.check("alice", 2048) is None
    err = a.check("alice", 2049)
    assert err is not None
    assert err.code == ErrorCode.INVALID_REQUEST
    assert "limits.max_request_bytes" in err.message


def test_unknown_users_refused_only_when_configured():
    open_door = admission({}, [0.0])
    assert open_door.check("stranger", 10) is None
    closed = admission(
        {"LOOKOUT_AUTH__ALLOW_UNKNOWN_USERS": "false", "LOOKOUT_USERS__ALICE__ROLE": "viewer"},
        [0.0],
    )
    assert closed.check("alice", 10) is None
    err = closed.check("stranger", 10)
    assert err is not None
    assert err.code == ErrorCode.FORBIDDEN
    assert "auth.allow_unknown_users" in err.message


def test_rate_limit_per_user_refills_over_time():
    now = [100.0]
    a = admission({"LOOKOUT_LIMITS__REQUESTS_PER_MINUTE": "3"}, now)
    assert [a.check("bob", 1) for _ in range(3)] == [None, None, None]
    err = a.check("bob", 1)
    assert err is not None
    assert err.code == ErrorCode.RATE_LIMITED
    assert "limits.requests_per_minute" in err.message
    assert a.check("carol", 1) is None  # per user
    now[0] += 20.0  # a third of a minute: one token back
    assert a.check("bob", 1) is None
    assert a.check("bob", 1) is not None


def test_rate_limit_zero_means_off():
    a = admission({"LOOKOUT_LIMITS__REQUESTS_PER_MINUTE": "0"}, [0.0])
    assert all(a.check("bob", 1) is None for _ in range(1000))


@pytest.mark.parametrize(
    ("topic", "allowed"),
    [
        ("lookout/alice/answers", True),
        ("lookout/alice/reply/x", True),
        ("elsewhere/replies", True),
        ("nodered/reply/123", True),
        ("lookout/bob/answers", False),  # someone else's namespace
        ("lookout/alice/chat", False),  # a request topic, even her own
        ("lookout/alice/tool", False),
        ("lookout/status", False),
        ("lookout/tools", False),
        ("lookout/camera/front/frame", False),
        ("frigate/front/detect/set", False),  # a Frigate command
        ("frigate/events", False),
        ("homeassistant/device/x/config", False),
        ("$SYS/broker", False),
        ("a/+/b", False),
    ],
)
def test_reply_topics_cannot_reach_into_protected_places(topic, allowed):
    topics = TopicMap("lookout", "frigate")
    assert topics.reply_allowed("alice", topic, ("homeassistant",)) is allowed

"""The topic map: patterns, request parsing, reserved users and publishable topics."""

from __future__ import annotations

import pytest

from service.mqtt.topics import (
    RESERVED_USERS,
    Pattern,
    RequestKind,
    TopicMap,
    is_valid_publish_topic,
)

REPLY = Pattern("lookout/{user}/reply/{id}")


def test_filter_turns_every_capture_into_a_single_level_wildcard():
    assert REPLY.filter == "lookout/+/reply/+"
    assert Pattern("frigate/{camera}/{feature}/state").filter == "frigate/+/+/state"
    assert Pattern("lookout/status").filter == "lookout/status"


def test_match_returns_the_captures_by_name():
    assert REPLY.match("lookout/alice/reply/r-1_X") == {"user": "alice", "id": "r-1_X"}
    assert Pattern("lookout/status").match("lookout/status") == {}


@pytest.mark.parametrize(
    "topic",
    [
        "lookout/alice/reply",  # too few levels
        "lookout/alice/reply/r1/extra",  # too many levels
        "lookout/alice/answer/r1",  # a literal level differs
        "other/alice/reply/r1",  # another prefix
        "Lookout/alice/reply/r1",  # topics are case-sensitive
        "",
    ],
)
def test_match_rejects_topics_of_another_shape(topic):
    assert REPLY.match(topic) is None


@pytest.mark.parametrize(
    "capture",
    [
        "+",
        "#",
        "",
        "a" * 65,
        "café",
        "\uff41lice",  # fullwidth letter
        "١٢٣",  # Arabic-Indic digits are \d in Unicode regexes
        "al ice",
        "al.ice",
        "alice\n",  # `$` alone would accept a trailing newline
        "\x00",
    ],
)
def test_match_rejects_unsafe_captures(capture):
    assert REPLY.match(f"lookout/{capture}/reply/r1") is None
    assert REPLY.match(f"lookout/alice/reply/{capture}") is None


def test_a_slash_inside_a_capture_changes_the_level_count_and_is_rejected():
    assert REPLY.match("lookout/al/ice/reply/r1") is None


def test_capture_of_exactly_64_safe_characters_is_accepted():
    name = "A-z_9" * 12 + "abcd"
    assert len(name) == 64
    assert REPLY.match(f"lookout/{name}/reply/r1") == {"user": name, "id": "r1"}


def test_format_builds_a_topic_and_round_trips_through_match():
    topic = REPLY.format(user="bob", id="abc")
    assert topic == "lookout/bob/reply/abc"
    assert REPLY.match(topic) == {"user": "bob", "id": "abc"}


@pytest.mark.parametrize("value", ["+", "#", "a/b", "", "x" * 65, "é", "ok\n"])
def test_format_refuses_a_value_that_is_not_one_safe_level(value):
    with pytest.raises(ValueError, match="not a valid topic level"):
        REPLY.format(user="bob", id=value)


def test_format_without_a_capture_value_raises():
    with pytest.raises(KeyError):
        REPLY.format(user="bob")


@pytest.mark.parametrize(
    ("suffix", "kind"),
    [
        ("health", RequestKind.HEALTH),
        ("chat", RequestKind.CHAT),
        ("chat/cancel", RequestKind.CHAT_CANCEL),
        ("tool", RequestKind.TOOL),
        ("watch", RequestKind.WATCH),
    ],
)
def test_request_kind_parses_each_kind_and_its_caller(suffix, kind):
    topics = TopicMap()
    assert topics.request_kind(f"lookout/alice/{suffix}") == (kind, "alice")


@pytest.mark.parametrize(
    "topic",
    [
        "lookout/alice/reply/r1",
        "lookout/alice/chat/stop",
        "lookout/alice/health/extra",
        "lookout/alice",
        "lookout/status",
        "lookout/tools",
        "lookout/camera/front/frame",
        "lookout/alice/watch/job1",  # watch state, published by lookout itself
        "frigate/alice/health",
        "lookout/+/health",
        "lookout/bad name/health",
    ],
)
def test_request_kind_is_none_for_other_topics(topic):
    assert TopicMap().request_kind(topic) is None


@pytest.mark.parametrize("user", sorted(RESERVED_USERS))
def test_reserved_first_levels_are_not_callers(user):
    topics = TopicMap()
    for kind in RequestKind:
        assert topics.request_kind(f"lookout/{user}/{kind.value}") is None


def test_reserved_users_are_exactly_the_non_caller_levels():
    assert {"camera", "tools", "status"} == RESERVED_USERS


def test_a_prefix_of_several_levels_is_used_everywhere():
    topics = TopicMap("home/lookout", "nvr/frigate")
    assert topics.status == "home/lookout/status"
    assert topics.tools == "home/lookout/tools"
    assert topics.requests[RequestKind.CHAT_CANCEL].filter == "home/lookout/+/chat/cancel"
    assert topics.request_kind("home/lookout/alice/chat/cancel") == (
        RequestKind.CHAT_CANCEL,
        "alice",
    )
    assert topics.request_kind("home/lookout/status/health") is None
    # The default prefix's topics are not ours any more.
    assert topics.request_kind("lookout/alice/health") is None
    assert topics.request_kind("home/alice/health") is None
    assert topics.default_reply("alice", "r1") == "home/lookout/alice/reply/r1"
    assert topics.frame.match("home/lookout/camera/front_door/frame") == {"camera": "front_door"}
    assert topics.watch_alert.format(user="bob", job_id="j1") == "home/lookout/bob/watch/j1/alert"
    assert topics.frigate_events == "nvr/frigate/events"
    assert topics.frigate_state.filter == "nvr/frigate/+/+/state"
    assert (
        topics.frigate_set.format(camera="back", feature="detect") == "nvr/frigate/back/detect/set"
    )


def test_default_topic_map_names_frigate_topics_as_frigate_publishes_them():
    topics = TopicMap()
    assert topics.frigate_available == "frigate/available"
    assert topics.frigate_reviews == "frigate/reviews"
    assert topics.frigate_snapshot.match("frigate/front/person/snapshot") == {
        "camera": "front",
        "label": "person",
    }


def test_default_reply_refuses_an_unsafe_id():
    with pytest.raises(ValueError, match="not a valid topic level"):
        TopicMap().default_reply("alice", "a/b")


@pytest.mark.parametrize(
    "topic",
    ["a", "lookout/alice/answers", "a//b", "/leading", "x" * 512, "home/été"],
)
def test_publishable_topics(topic):
    assert is_valid_publish_topic(topic)


@pytest.mark.parametrize(
    "topic",
    ["", "x" * 513, "a/+/b", "a/#", "+", "#", "a\x00b", "$SYS/broker", "$share/g/t"],
)
def test_unpublishable_topics(topic):
    assert not is_valid_publish_topic(topic)

"""The request envelope: id/reply_to validation, lenient peeking, numbered replies."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import pytest
from pydantic import ValidationError

from service.mqtt.envelope import (
    REPLY_RETAIN_S,
    TERMINAL_TYPES,
    ErrorCode,
    ReplyChannel,
    ReplyClosedError,
    ReplyRoute,
    Request,
    RequestError,
    new_request_id,
    peek_envelope,
)
from service.mqtt.topics import NAME_RE


class RecordingPublisher:
    """Keeps every publish; optionally holds each one until ``release`` is set."""

    def __init__(self) -> None:
        self.published: list[dict[str, Any]] = []
        self.release: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        correlation_data: bytes | None = None,
    ) -> None:
        self.entered.set()
        if self.release is not None:
            await self.release.wait()
        self.published.append(
            {
                "topic": topic,
                "body": json.loads(payload),
                "qos": qos,
                "retain": retain,
                "correlation_data": correlation_data,
            }
        )


# -- Request ---------------------------------------------------------------------------


def test_request_fields_are_optional():
    req = Request.model_validate_json(b"{}")
    assert req.id is None and req.reply_to is None


def test_request_accepts_a_safe_id_and_a_plain_reply_topic():
    req = Request.model_validate({"id": "Ab-9_" * 12 + "wxyz", "reply_to": "ha/answers/x"})
    assert len(req.id or "") == 64
    assert req.reply_to == "ha/answers/x"


@pytest.mark.parametrize(
    "bad_id", ["", "a" * 65, "has space", "a/b", "+", "#", "naïve", "trailing\n", 7]
)
def test_request_rejects_unsafe_ids(bad_id):
    with pytest.raises(ValidationError) as info:
        Request.model_validate({"id": bad_id})
    assert info.value.errors()[0]["loc"] == ("id",)


@pytest.mark.parametrize("bad_topic", ["", "a/+/b", "a/#", "$SYS/x", "a\x00b", "t" * 513, ["a"]])
def test_request_rejects_unpublishable_reply_topics(bad_topic):
    with pytest.raises(ValidationError) as info:
        Request.model_validate({"reply_to": bad_topic})
    assert info.value.errors()[0]["loc"] == ("reply_to",)


def test_request_forbids_unknown_fields_and_is_frozen():
    with pytest.raises(ValidationError) as info:
        Request.model_validate({"id": "a", "colour": "blue"})
    assert info.value.errors()[0]["type"] == "extra_forbidden"
    req = Request(id="a")
    with pytest.raises(ValidationError):
        req.id = "b"  # type: ignore[misc]


def test_new_request_ids_are_valid_and_distinct():
    ids = {new_request_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(NAME_RE.fullmatch(i) for i in ids)


# -- peek_envelope ---------------------------------------------------------------------


def test_peek_reads_id_and_reply_to_from_a_payload_that_fails_validation():
    payload = json.dumps({"id": "r1", "reply_to": "ha/answers", "bogus": [1, 2]}).encode()
    assert peek_envelope(payload)[:2] == ("r1", "ha/answers")


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"", (None, None)),
        (b"\xff\xfe not json", (None, None)),
        (b"not json", (None, None)),
        (b'["id", "r1"]', (None, None)),
        (b'"r1"', (None, None)),
        (b"null", (None, None)),
        (b"42", (None, None)),
        (b'{"id": 5, "reply_to": {"t": 1}}', (None, None)),
        (b'{"id": "bad id", "reply_to": "a/#"}', (None, None)),
        (b'{"id": "ok\\n", "reply_to": "$SYS/x"}', (None, None)),
        (b'{"id": "r2", "reply_to": 12}', ("r2", None)),
        (b'{"reply_to": "plain/topic"}', (None, "plain/topic")),
    ],
)
def test_peek_is_lenient_and_never_raises(payload, expected):
    assert peek_envelope(payload)[:2] == expected


def test_peek_survives_ten_thousand_levels_of_nesting():
    deep = b'{"id": "r1", "x": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    assert peek_envelope(deep)[:2] == (None, None)
    assert peek_envelope(b"[" * 100_000)[:2] == (None, None)


def test_peek_survives_huge_numbers():
    # Beyond Python's int-string limit json.loads raises ValueError; peek must not.
    assert peek_envelope(b'{"id": "r1", "n": ' + b"9" * 10_000 + b"}")[:2] == (None, None)
    assert peek_envelope(b'{"id": "r1", "n": 1e999999, "m": -1e999999}')[:2] == ("r1", None)


# -- ReplyChannel ----------------------------------------------------------------------


async def test_replies_are_numbered_from_zero_and_carry_the_request_id():
    pub = RecordingPublisher()
    channel = ReplyChannel(pub, ReplyRoute("lookout/alice/reply/r1"), "r1")
    await channel.send("progress", {"step": 1})
    await channel.send("progress", {"step": 2})
    assert not channel.finished
    await channel.done({"answer": 42})
    assert channel.finished and channel.terminal == "done"
    assert [p["body"] for p in pub.published] == [
        {"id": "r1", "type": "progress", "seq": 0, "step": 1},
        {"id": "r1", "type": "progress", "seq": 1, "step": 2},
        {"id": "r1", "type": "done", "seq": 2, "answer": 42},
    ]
    assert {p["topic"] for p in pub.published} == {"lookout/alice/reply/r1"}
    assert all(p["qos"] == 1 and p["retain"] is False for p in pub.published)


@pytest.mark.parametrize("first", sorted(TERMINAL_TYPES))
@pytest.mark.parametrize("second", sorted(TERMINAL_TYPES))
async def test_exactly_one_terminal_reply(first, second):
    pub = RecordingPublisher()
    channel = ReplyChannel(pub, ReplyRoute("t"), "r1")
    await channel.send(first)
    with pytest.raises(ReplyClosedError, match="r1"):
        await channel.send(second)
    with pytest.raises(ReplyClosedError):
        await channel.send("progress")
    assert [p["body"]["type"] for p in pub.published] == [first]
    assert channel.terminal == first


async def test_terminal_is_claimed_before_the_publish_completes():
    pub = RecordingPublisher()
    pub.release = asyncio.Event()
    channel = ReplyChannel(pub, ReplyRoute("t"), "r1")
    first = asyncio.create_task(channel.done(), name="first-done")
    await asyncio.wait_for(pub.entered.wait(), 5)
    assert channel.finished
    with pytest.raises(ReplyClosedError):
        await channel.error(ErrorCode.INTERNAL, "late")
    pub.release.set()
    await asyncio.wait_for(first, 5)
    assert [p["body"]["type"] for p in pub.published] == ["done"]


async def test_progress_replies_do_not_wait_for_the_broker_but_the_terminal_does():
    pub = RecordingPublisher()
    pub.release = asyncio.Event()  # the broker has not acknowledged anything yet
    channel = ReplyChannel(pub, ReplyRoute("t"), "r1")
    for step in range(3):
        await asyncio.wait_for(channel.send("progress", {"step": step}), 1)
    done = asyncio.create_task(channel.done({"ok": True}), name="done")
    await asyncio.wait_for(pub.entered.wait(), 5)
    assert not done.done()
    assert pub.published == []
    pub.release.set()
    await asyncio.wait_for(done, 5)
    assert [(p["body"]["type"], p["body"]["seq"]) for p in pub.published] == [
        ("progress", 0),
        ("progress", 1),
        ("progress", 2),
        ("done", 3),
    ]


async def test_a_terminal_cancelled_while_progress_is_pending_leaves_no_sender_behind():
    pub = RecordingPublisher()
    pub.release = asyncio.Event()
    channel = ReplyChannel(pub, ReplyRoute("t"), "r1")
    await channel.send("progress")
    (sender,) = [t for t in asyncio.all_tasks() if t.get_name() == "replies:r1"]
    done = asyncio.create_task(channel.done(), name="done")
    await asyncio.wait_for(pub.entered.wait(), 5)
    done.cancel()
    with pytest.raises(asyncio.CancelledError):
        await done
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(sender, 5)
    assert sender.cancelled()
    assert pub.published == []


async def test_correlation_data_is_passed_through_on_every_reply():
    pub = RecordingPublisher()
    channel = ReplyChannel(pub, ReplyRoute("rt/v5", b"\x00\xffcorr"), "r1")
    await channel.send("progress")
    await channel.done()
    assert [p["correlation_data"] for p in pub.published] == [b"\x00\xffcorr"] * 2
    assert [p["topic"] for p in pub.published] == ["rt/v5"] * 2


async def test_error_body_shape_with_and_without_details():
    pub = RecordingPublisher()
    await ReplyChannel(pub, ReplyRoute("t"), "a").error(ErrorCode.NOT_FOUND, "no such camera")
    await ReplyChannel(pub, ReplyRoute("t"), "b").error(
        "timeout", "too slow", after_s=3.5, camera="front"
    )
    assert pub.published[0]["body"] == {
        "id": "a",
        "type": "error",
        "seq": 0,
        "error": {"code": "not_found", "message": "no such camera"},
    }
    assert pub.published[1]["body"] == {
        "id": "b",
        "type": "error",
        "seq": 0,
        "error": {
            "code": "timeout",
            "message": "too slow",
            "details": {"after_s": 3.5, "camera": "front"},
        },
    }


async def test_reply_payload_is_compact_utf8_json():
    captured: list[bytes] = []

    class Raw:
        async def publish(self, topic: str, payload: bytes, **_kw: Any) -> None:
            captured.append(payload)

    await ReplyChannel(Raw(), ReplyRoute("t"), "r1").done({"text": "café ☕"})
    assert captured == ['{"id":"r1","type":"done","seq":0,"text":"café ☕"}'.encode()]


@pytest.mark.parametrize("key", ["id", "type", "seq"])
async def test_a_body_cannot_overwrite_the_envelope_fields(key):
    pub = RecordingPublisher()
    channel = ReplyChannel(pub, ReplyRoute("t"), "r1")
    with pytest.raises(ValueError, match=key):
        await channel.done({key: "spoof"})
    # Refused before anything was sent or claimed: the channel can still end properly.
    assert not channel.finished
    assert pub.published == []
    await channel.error(ErrorCode.INTERNAL, "handler bug")
    assert pub.published[0]["body"]["type"] == "error"
    assert pub.published[0]["body"]["seq"] == 0


def test_request_error_carries_code_message_and_details():
    err = RequestError(ErrorCode.FORBIDDEN, "not your camera", camera="back")
    assert err.code is ErrorCode.FORBIDDEN
    assert str(err) == err.message == "not your camera"
    assert err.details == {"camera": "back"}


def test_error_codes_are_their_wire_strings():
    assert str(ErrorCode.SHUTTING_DOWN) == "shutting_down"
    assert all(code.value == code.value.lower() for code in ErrorCode)
    assert len({c.value for c in ErrorCode}) == len(ErrorCode)


async def test_a_progress_reply_that_fails_to_publish_does_not_cost_the_terminal():
    sent: list[str] = []

    class Flaky:
        async def publish(self, topic: str, payload: bytes, **_kw: Any) -> None:
            body = json.loads(payload)
            if body.get("step") == 1:
                raise RuntimeError("broker said no")
            sent.append(f"{body['type']}:{body['seq']}")

    channel = ReplyChannel(Flaky(), ReplyRoute("t"), "r1")
    for step in range(3):
        await channel.send("progress", {"step": step})
    await asyncio.wait_for(channel.done(), 5)
    assert sent == ["progress:0", "progress:2", "done:3"]


def test_peek_reads_reply_retain_only_when_true() -> None:
    assert peek_envelope(b'{"id": "r1", "reply_retain": true}').reply_retain is True
    assert peek_envelope(b'{"id": "r1", "reply_retain": "yes"}').reply_retain is False
    assert peek_envelope(b'{"id": "r1"}').reply_retain is False


async def test_a_retained_terminal_reply_expires() -> None:
    calls: list[dict[str, Any]] = []

    class Publisher:
        async def publish(self, topic: str, payload: bytes, **kw: Any) -> None:
            calls.append({"topic": topic, "type": json.loads(payload)["type"], **kw})

    channel = ReplyChannel(Publisher(), ReplyRoute("lk/ha/reply/r1", retain_terminal=True), "r1")
    await channel.send("tool_call", {"name": "x"})
    await channel.done({"text": "ok"})
    progress, terminal = calls
    assert not progress.get("retain") and progress["type"] == "tool_call"
    assert terminal["retain"] is True and terminal["expiry_s"] == REPLY_RETAIN_S


async def test_a_rerun_says_its_attempt_on_every_reply_and_the_terminal_is_recorded_first():
    from service.mqtt.envelope import ReplyChannel, ReplyRoute

    published: list[bytes] = []
    recorded: list[bytes] = []

    class Pub:
        async def publish(self, topic, payload, **kwargs):
            published.append(payload)

    async def record(payload: bytes) -> None:
        assert payload not in published  # before it goes out
        recorded.append(payload)

    channel = ReplyChannel(Pub(), ReplyRoute("t"), "r1", attempt=2)
    channel.before_terminal = record
    await channel.send("content", {"delta": "x"})
    await channel.done({})
    bodies = [json.loads(p) for p in published]
    assert [(b["seq"], b["attempt"]) for b in bodies] == [(0, 2), (1, 2)]
    assert recorded == [published[-1]]

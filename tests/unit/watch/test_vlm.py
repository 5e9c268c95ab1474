"""The watch's prompt, its JSON-schema response format, and tolerant verdict parsing."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.llm.provider import Provider
from service.settings import ProviderSettings
from service.watch.vlm import (
    RESPONSE_FORMAT,
    SeenObject,
    Verdict,
    VerdictError,
    build_messages,
    frame_text,
    parse_verdict,
    system_prompt,
    user_message,
)

GOOD = {
    "condition_met": True,
    "next_run_in": 30,
    "reasoning": "A person stands at the car.",
    "notification_message": "Someone is at your car.",
}


def test_plain_json() -> None:
    v = parse_verdict(json.dumps(GOOD))
    assert v == Verdict(True, 30, "A person stands at the car.", "Someone is at your car.")


@pytest.mark.parametrize(
    "wrapped",
    [
        "```json\n{body}\n```",
        "```\n{body}\n```",
        "Sure! Here is my answer:\n{body}\nLet me know if you need more.",
        '<think>The car is parked. {{"condition_met": false}} maybe?</think>\n{body}',
        "  \n{body}",
    ],
)
def test_fences_prose_and_think_blocks(wrapped: str) -> None:
    v = parse_verdict(wrapped.format(body=json.dumps(GOOD)))
    assert v.condition_met is True and v.next_run_in == 30


def test_empty_content_falls_back_to_the_reasoning_and_takes_its_last_object() -> None:
    reasoning = (
        'Let me draft: {"condition_met": true, "next_run_in": 5} no wait, the person is on '
        'the street. Final: {"condition_met": false, "next_run_in": 3, "reasoning": "Not yet '
        'in the driveway.", "notification_message": ""}'
    )
    v = parse_verdict("", reasoning)
    assert (
        v.condition_met is False
        and v.next_run_in == 3
        and v.reasoning == "Not yet in the driveway."
    )


def test_content_wins_over_reasoning() -> None:
    v = parse_verdict(json.dumps(GOOD), json.dumps({**GOOD, "condition_met": False}))
    assert v.condition_met is True


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, 1), (-5, 1), (1, 1), (300, 300), (301, 300), (10_000, 300), (12.6, 13), ("45", 45),
     ("soon", 30), (None, 30), (True, 30), ("1e9", 300), ([], 30)],
)  # fmt: skip
def test_next_run_in_is_clamped_and_defaulted(value: object, expected: int) -> None:
    body = {**GOOD, "next_run_in": value}
    assert parse_verdict(json.dumps(body)).next_run_in == expected
    missing = {k: v for k, v in GOOD.items() if k != "next_run_in"}
    assert parse_verdict(json.dumps(missing)).next_run_in == 30


@pytest.mark.parametrize(
    ("value", "expected"), [("true", True), ("False", False), ("yes", True), (1, True), (0, False)]
)
def test_condition_met_spelled_loosely(value: object, expected: bool) -> None:
    assert parse_verdict(json.dumps({**GOOD, "condition_met": value})).condition_met is expected


@pytest.mark.parametrize(
    ("content", "reasoning"),
    [
        ("", ""),
        ("I cannot see the image.", ""),
        ('{"next_run_in": 10}', ""),  # no condition_met
        ('{"condition_met": "perhaps"}', ""),
        ("[1, 2, 3]", "still thinking"),
        ('{"condition_met": true', ""),  # cut off
    ],
)
def test_no_verdict_raises(content: str, reasoning: str) -> None:
    with pytest.raises(VerdictError):
        parse_verdict(content, reasoning)


def test_long_fields_are_cut_and_missing_ones_are_empty() -> None:
    v = parse_verdict(json.dumps({"condition_met": False, "reasoning": "x" * 5000}))
    assert len(v.reasoning) == 1000 and v.notification_message == ""


def test_canonical_history_form_round_trips() -> None:
    v = parse_verdict(json.dumps(GOOD))
    assert parse_verdict(v.to_json()) == v


@given(st.text(max_size=300))
def test_parse_never_fails_other_than_with_verdict_error(text: str) -> None:
    try:
        v = parse_verdict(text, text)
    except VerdictError:
        return
    assert 1 <= v.next_run_in <= 300


def test_response_format_is_a_strict_schema_of_the_five_fields() -> None:
    assert RESPONSE_FORMAT["type"] == "json_schema"
    schema = RESPONSE_FORMAT["json_schema"]["schema"]
    assert RESPONSE_FORMAT["json_schema"]["strict"] is True
    assert set(schema["required"]) == set(schema["properties"]) == {*GOOD, "confidence"}
    assert schema["additionalProperties"] is False
    assert schema["properties"]["next_run_in"] == {"type": "integer", "minimum": 1, "maximum": 300}


def test_provider_sends_the_schema_and_turns_thinking_off_or_drops_it_when_told() -> None:
    on = Provider("p", ProviderSettings(model="m", base_url="http://llama:8080/v1"))
    body = on.build_request([], response_format=RESPONSE_FORMAT, enable_thinking=False)
    assert body["response_format"] == RESPONSE_FORMAT
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    off = Provider("p", ProviderSettings(model="m", json_schema=False))
    assert "response_format" not in off.build_request([], response_format=RESPONSE_FORMAT)


def test_prompt_names_condition_labels_and_zones_and_the_wake_rule() -> None:
    text = system_prompt("someone walks up to the car", ["person", "car"], ["driveway"])
    assert '"someone walks up to the car"' in text
    assert "person, car" in text and "driveway" in text
    assert "woken early" in text and "next_run_in" in text and "JSON" in text
    assert "Only these" not in system_prompt("a dog", [], [])


def test_frame_text_lists_what_the_detector_tracks() -> None:
    objects = [SeenObject("car", True, ("driveway",)), SeenObject("person", False, ())]
    text = frame_text("Driveway", "Tue 14:03:07", objects)
    assert text == (
        "Frame from Driveway taken at Tue 14:03:07. The detector tracks: "
        "car (stationary in driveway); person (moving)."
    )
    assert frame_text("Driveway", "t", []).endswith("tracks: nothing.")
    # Names from Frigate cannot smuggle markup into the prompt.
    assert "<" not in frame_text("Drive<way>", "t", [SeenObject("car\n<x>", False, ())])


def test_messages_keep_history_order_between_system_and_the_new_frame() -> None:
    first = user_message("frame 1", "data:image/jpeg;base64,AAAA")
    answer = {"role": "assistant", "content": Verdict(False, 60, "car parked", "").to_json()}
    current = user_message("frame 2", "data:image/jpeg;base64,BBBB")
    messages = build_messages("SYSTEM", [(first, answer)], current)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[-1]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/jpeg;base64,BBBB"},
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.42, 0.42), (1, 1.0), (0, 0.0), (85, 0.85), ("0.3", 0.3), (-1, 0.0), (1e9, 1.0),
     (None, None), (True, None), ("sure", None), (float("nan"), None)],
)  # fmt: skip
def test_confidence_is_read_as_a_share_and_absent_is_none(
    value: object, expected: float | None
) -> None:
    body = json.dumps({**GOOD, "confidence": value})  # NaN goes out as the bare word NaN
    assert parse_verdict(body).confidence == expected


def test_the_confidence_is_kept_in_the_history_and_the_prompt_asks_for_it() -> None:
    v = Verdict(True, 5, "A shadow?", "Someone at the door.", confidence=0.4)
    assert json.loads(v.to_json())["confidence"] == 0.4
    assert "confidence" not in json.loads(Verdict(False, 5, "", "").to_json())
    assert "confidence: how sure" in system_prompt("a person at the door", [], [])

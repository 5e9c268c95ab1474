"""The tolerant tool-call accumulator, fed the delta shapes real servers stream."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.chat.chat_completion_chunk import ChoiceDeltaToolCall

from service.llm.accumulate import ToolCallAccumulator, parse_arguments


def run(*chunks: list[dict[str, Any]]) -> list[Any]:
    acc = ToolCallAccumulator()
    for deltas in chunks:
        acc.feed(deltas)
    return acc.result()


def fn(name: str | None = None, arguments: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if name is not None:
        out["name"] = name
    if arguments is not None:
        out["arguments"] = arguments
    return out


def test_openai_header_then_fragments_two_calls():
    calls = run(
        [{"index": 0, "id": "call_a", "type": "function", "function": fn("search_objects", "")}],
        [{"index": 0, "function": fn(arguments='{"lab')}],
        [{"index": 0, "function": fn(arguments='el": "person"}')}],
        [{"index": 1, "id": "call_b", "type": "function", "function": fn("get_camera_frame", "")}],
        [{"index": 1, "function": fn(arguments='{"camera": "front"}')}],
    )
    assert [(c.id, c.name, c.arguments) for c in calls] == [
        ("call_a", "search_objects", {"label": "person"}),
        ("call_b", "get_camera_frame", {"camera": "front"}),
    ]
    assert all(c.arguments_error is None for c in calls)


def test_missing_index_gemini_whole_calls():
    calls = run(
        [{"id": "g1", "type": "function", "function": fn("search_objects", '{"label": "car"}')}],
        [{"id": "g2", "type": "function", "function": fn("search_objects", '{"label": "dog"}')}],
    )
    assert [(c.id, c.arguments) for c in calls] == [
        ("g1", {"label": "car"}),
        ("g2", {"label": "dog"}),
    ]


def test_all_index_zero_with_different_ids_are_separate_calls():
    calls = run(
        [{"index": 0, "id": "call_1", "function": fn("search_objects", '{"label": "person"}')}],
        [{"index": 0, "id": "call_2", "function": fn("get_camera_frame", '{"camera": "back"}')}],
        [{"index": 0, "id": "call_3", "function": fn("search_objects", '{"label": "cat"}')}],
    )
    assert [(c.id, c.name) for c in calls] == [
        ("call_1", "search_objects"),
        ("call_2", "get_camera_frame"),
        ("call_3", "search_objects"),
    ]
    assert calls[2].arguments == {"label": "cat"}


def test_all_index_zero_without_ids_same_function_are_separate_calls():
    calls = run(
        [{"index": 0, "function": fn("search_objects", '{"label": "person"}')}],
        [{"index": 0, "function": fn("search_objects", '{"label": "cat"}')}],
    )
    assert [c.arguments for c in calls] == [{"label": "person"}, {"label": "cat"}]
    assert calls[0].id != calls[1].id


def test_whole_call_in_one_chunk():
    [call] = run(
        [{"index": 0, "id": "x", "type": "function", "function": fn("list_cameras", "{}")}]
    )
    assert (call.id, call.name, call.arguments, call.arguments_raw) == (
        "x",
        "list_cameras",
        {},
        "{}",
    )


def test_arguments_split_into_single_characters():
    args = json.dumps({"label": "person", "zones": ["driveway", "porch"], "limit": 5})
    chunks = [[{"index": 0, "id": "c", "function": fn("search_objects", "")}]]
    chunks += [[{"index": 0, "function": fn(arguments=ch)}] for ch in args]
    [call] = run(*chunks)
    assert call.arguments == json.loads(args)
    assert call.arguments_raw == args


def test_empty_or_missing_arguments_become_empty_object():
    calls = run(
        [{"index": 0, "id": "a", "function": fn("list_cameras", "")}],
        [{"index": 1, "id": "b", "function": fn("get_status")}],
        [{"index": 2, "id": "c", "function": {"name": "get_time", "arguments": None}}],
    )
    assert [(c.arguments, c.arguments_raw, c.arguments_error) for c in calls] == [
        ({}, "{}", None)
    ] * 3


def test_invalid_json_arguments_are_kept_raw_with_an_error():
    [call] = run([{"index": 0, "id": "a", "function": fn("search_objects", '{"label": "person"')}])
    assert call.arguments is None
    assert call.arguments_raw == '{"label": "person"'
    assert call.arguments_error is not None
    assert "not valid JSON" in call.arguments_error
    # Replayed history must stay parsable for servers that re-render the template.
    assert call.to_message_dict()["function"]["arguments"] == "{}"


def test_non_object_arguments_are_an_error():
    [call] = run([{"index": 0, "id": "a", "function": fn("search_objects", "[1, 2]")}])
    assert call.arguments is None
    assert call.arguments_error is not None
    assert "object" in call.arguments_error


def test_double_encoded_arguments_are_decoded():
    raw = json.dumps(json.dumps({"label": "person"}))
    [call] = run([{"index": 0, "id": "a", "function": fn("search_objects", raw)}])
    assert call.arguments == {"label": "person"}


def test_arguments_sent_as_an_object():
    [call] = run(
        [
            {
                "index": 0,
                "id": "a",
                "function": {"name": "search_objects", "arguments": {"label": "dog"}},
            }
        ]
    )
    assert call.arguments == {"label": "dog"}
    assert json.loads(call.arguments_raw) == {"label": "dog"}


def test_missing_ids_get_unique_generated_ids():
    calls = run(
        [{"index": 0, "function": fn("a", "{}")}],
        [{"index": 1, "function": fn("b", "{}")}],
        [{"index": 2, "function": fn("c", "{}")}],
    )
    ids = [c.id for c in calls]
    assert len(set(ids)) == 3
    assert all(i.startswith("call_") and len(i) > 10 for i in ids)


def test_duplicate_ids_are_made_unique():
    # Gemini's native ids are the function name: two parallel calls to one tool share it.
    calls = run(
        [{"id": "search_objects", "function": fn("search_objects", '{"label": "car"}')}],
        [{"id": "search_objects", "function": fn("search_objects", '{"label": "person"}')}],
    )
    assert [c.arguments for c in calls] == [{"label": "car"}, {"label": "person"}]
    assert calls[0].id == "search_objects"
    assert calls[1].id != calls[0].id
    assert calls[1].id.startswith("search_objects")


def test_fragment_without_index_or_id_continues_the_previous_call():
    calls = run(
        [{"id": "call_a", "type": "function", "function": fn("search_objects", '{"label":')}],
        [{"function": fn(arguments=' "person", ')}],
        [{"function": fn(arguments='"limit": 3}')}],
        [{"id": "call_b", "type": "function", "function": fn("list_cameras", "")}],
        [{"function": fn(arguments="{}")}],
    )
    assert [(c.id, c.arguments) for c in calls] == [
        ("call_a", {"label": "person", "limit": 3}),
        ("call_b", {}),
    ]


def test_unknown_per_call_fields_are_kept_and_replayed():
    signature = {"google": {"thought_signature": "c2lnbmF0dXJl"}}
    [call] = run(
        [
            {
                "id": "call_a",
                "type": "function",
                "function": fn("search_objects", '{"label": "car"}'),
                "extra_content": signature,
            }
        ]
    )
    assert call.extra == {"extra_content": signature}
    assert call.to_message_dict() == {
        "id": "call_a",
        "type": "function",
        "function": {"name": "search_objects", "arguments": '{"label": "car"}'},
        "extra_content": signature,
    }


def test_interleaved_parallel_fragments():
    calls = run(
        [
            {"index": 0, "id": "a", "function": fn("f", "")},
            {"index": 1, "id": "b", "function": fn("g", "")},
        ],
        [{"index": 1, "function": fn(arguments='{"y"')}],
        [{"index": 0, "function": fn(arguments='{"x"')}],
        [{"index": 0, "function": fn(arguments=": 1}")}],
        [{"index": 1, "function": fn(arguments=": 2}")}],
    )
    assert [(c.name, c.arguments) for c in calls] == [("f", {"x": 1}), ("g", {"y": 2})]


def test_proxy_that_gives_every_fragment_a_new_id_still_makes_one_call():
    calls = run(
        [{"index": 0, "id": "id1", "function": fn("search_objects", "")}],
        [{"index": 0, "id": "id2", "function": fn(arguments='{"label"')}],
        [{"index": 0, "id": "id3", "function": fn(arguments=': "cat"}')}],
    )
    assert [(c.id, c.arguments) for c in calls] == [("id1", {"label": "cat"})]


def test_name_repeated_on_every_fragment_is_one_call():
    calls = run(
        [{"index": 0, "id": "a", "function": fn("search_objects", '{"label"')}],
        [{"index": 0, "function": fn("search_objects", ': "cat"}')}],
    )
    assert [(c.name, c.arguments) for c in calls] == [("search_objects", {"label": "cat"})]


def test_flat_name_and_arguments_beside_function():
    [call] = run(
        [{"index": 0, "id": "a", "name": "search_objects", "arguments": '{"label": "car"}'}]
    )
    assert (call.name, call.arguments) == ("search_objects", {"label": "car"})


def test_call_without_a_name_is_dropped():
    calls = run(
        [{"index": 0, "function": fn(arguments="{}")}],
        [{"index": 1, "id": "b", "function": fn("list_cameras", "{}")}],
    )
    assert [c.name for c in calls] == ["list_cameras"]


def test_sdk_objects_are_normalised_with_extra_fields():
    acc = ToolCallAccumulator()
    head = ChoiceDeltaToolCall.model_validate(
        {
            "index": 0,
            "id": "call_a",
            "type": "function",
            "function": {"name": "search_objects", "arguments": ""},
            "extra_content": {"google": {"thought_signature": "sig"}},
        }
    )
    frag = ChoiceDeltaToolCall.model_validate(
        {"index": 0, "function": {"arguments": '{"label": "car"}'}}
    )
    acc.feed([head])
    acc.feed([frag])
    acc.feed(None)
    [call] = acc.result()
    assert call.arguments == {"label": "car"}
    assert call.extra == {"extra_content": {"google": {"thought_signature": "sig"}}}


def test_empty_accumulator():
    acc = ToolCallAccumulator()
    acc.feed([])
    assert not acc
    assert acc.result() == []


def test_parse_arguments_null_is_empty_object():
    assert parse_arguments("null") == ({}, None)
    assert parse_arguments("  ") == ({}, None)


_names = st.sampled_from(["search_objects", "get_camera_frame", "list_cameras", "set_watch"])
_values = st.one_of(st.integers(), st.text(max_size=12), st.booleans(), st.none())
_args = st.dictionaries(st.text(min_size=1, max_size=8), _values, max_size=4)


@settings(max_examples=60, deadline=None)
@given(
    calls=st.lists(st.tuples(_names, _args), min_size=1, max_size=4),
    size=st.integers(min_value=1, max_value=9),
    with_index=st.booleans(),
)
def test_any_fragmentation_reassembles(calls, size, with_index):
    """OpenAI-style (with index) or indexless continuation fragments always reassemble."""
    acc = ToolCallAccumulator()
    for i, (name, args) in enumerate(calls):
        text = json.dumps(args)
        head: dict[str, Any] = {
            "id": f"call_{i}",
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        if with_index:
            head["index"] = i
        acc.feed([head])
        for start in range(0, len(text), size):
            frag: dict[str, Any] = {"function": {"arguments": text[start : start + size]}}
            if with_index:
                frag["index"] = i
            acc.feed([frag])
    result = acc.result()
    assert [(c.id, c.name, c.arguments) for c in result] == [
        (f"call_{i}", name, args) for i, (name, args) in enumerate(calls)
    ]


# -- issue 15: never split one call, never run one twice --------------------------------------


def test_an_id_that_arrives_late_without_index_does_not_split_the_call():
    calls = run(
        [{"type": "function", "function": fn("search_objects", "")}],
        [{"function": fn(arguments='{"la')}],
        [{"id": "call_late", "function": fn(arguments='bel": "car"}')}],
    )
    assert [(c.id, c.name, c.arguments) for c in calls] == [
        ("call_late", "search_objects", {"label": "car"})
    ]


def test_a_proxy_that_re_ids_every_chunk_without_index():
    calls = run(
        [{"id": "chatcmpl-1", "type": "function", "function": fn("set_camera_state", "")}],
        [{"id": "chatcmpl-2", "function": fn(arguments='{"camera": "drive')}],
        [{"id": "chatcmpl-3", "function": fn(arguments='way", "feature": "detect", ')}],
        [{"id": "chatcmpl-4", "function": fn(arguments='"value": "OFF"}')}],
    )
    assert len(calls) == 1
    assert calls[0].arguments == {"camera": "driveway", "feature": "detect", "value": "OFF"}


def test_a_trailing_repeat_of_a_finished_call_is_not_a_second_call():
    # vLLM-style: the header again after the arguments, same index, id and name.
    header = {"index": 0, "id": "call_1", "type": "function"}
    calls = run(
        [{**header, "function": fn("set_camera_state", "")}],
        [{"index": 0, "function": fn(arguments='{"camera": "driveway", "feature": "detect", ')}],
        [{"index": 0, "function": fn(arguments='"value": "OFF"}')}],
        [{**header, "function": fn("set_camera_state", "")}],
    )
    assert [(c.id, c.name) for c in calls] == [("call_1", "set_camera_state")]
    assert calls[0].arguments == {"camera": "driveway", "feature": "detect", "value": "OFF"}


def test_a_trailing_whole_repeat_without_index_is_ignored():
    whole = {
        "id": "call_9",
        "type": "function",
        "function": fn("stop_camera_watch", '{"job_id": "j1"}'),
    }
    calls = run([whole], [whole])
    assert [(c.id, c.arguments) for c in calls] == [("call_9", {"job_id": "j1"})]


def test_gemini_parallel_calls_to_one_tool_sharing_an_id_stay_two():
    calls = run(
        [{"id": "get_live_context", "function": fn("get_live_context", '{"camera": "front"}')}],
        [{"id": "get_live_context", "function": fn("get_live_context", '{"camera": "back"}')}],
    )
    assert [c.arguments for c in calls] == [{"camera": "front"}, {"camera": "back"}]
    assert len({c.id for c in calls}) == 2

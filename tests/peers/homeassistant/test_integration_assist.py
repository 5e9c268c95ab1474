"""Assist with the lookout agent, in the real Home Assistant against the real lookout:
``conversation/process`` answers a question that needs a tool round, continues the
conversation, is answered as the asker's lookout user, says lookout's errors and a
missing answer in words; an Assist pipeline streams the answer where the release can.

The fake model (``Model.responder``) calls ``search_objects`` for a question about cars
and then answers from the tool's result, so the answer says what lookout found with the
asker's rights; a question asked "slowly" is answered in pieces a quarter second apart.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from tests.fake_llm import RecordedRequest, Reply, error, hang, reasoning, text, tool_calls
from tests.peers.homeassistant.harness import HaUser, HomeAssistant
from tests.peers.homeassistant.lookout import (
    LOOKOUT_USERS,
    Lookout,
    ask,
    frigate_objects,
    options_flow,
    question_of,
    run_pipeline,
    speech,
    stored,
    streams,
)

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(300)]

CARS = [("porch", "car"), ("garage", "car"), ("garage", "car")]
SLOW_ANSWER = "The porch is quiet. The garage door is shut. The driveway is empty."
SLOW_PIECES = 4
SLOW_GAP_S = 0.25
THOUGHT = "The porch camera saw nobody since noon."
THOUGHT_ANSWER = "Nobody is at the door."


def found_cars(result: dict[str, Any]) -> str:
    """What the fake model says to a ``search_objects`` result."""
    cars = [o for o in result["objects"] if o["label"] == "car"]
    cameras = sorted({o["camera"] for o in cars})
    return f"I found {len(cars)} cars, on {', '.join(cameras) or 'no camera'}."


def camera_model(request: RecordedRequest) -> Reply | None:
    last = request.last_message or {}
    if last.get("role") == "tool":
        return text(found_cars(json.loads(last["content"])))
    question = question_of(last)
    if "cars" in question:
        return tool_calls([("search_objects", {"label": "car"})])
    if "think" in question.lower():
        return reasoning(THOUGHT, THOUGHT_ANSWER)
    if "slowly" in question:
        size = -(-len(SLOW_ANSWER) // SLOW_PIECES)
        return text(SLOW_ANSWER, chunk_size=size, delay_s=SLOW_GAP_S)
    return None  # the tier's echo: "lookout heard: <question>"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def cars(lookout_service: Lookout, homeassistant: HomeAssistant) -> list[str]:
    """Cars on the porch and in the garage, in lookout's history (kept across restarts)."""
    await lookout_service.ensure(homeassistant, users=LOOKOUT_USERS)
    ids = await frigate_objects(lookout_service, CARS)
    await stored(lookout_service, ids)
    return ids


@pytest_asyncio.fixture(loop_scope="session")
async def agent(
    lookout_service: Lookout, lookout_integration: dict[str, Any], cars: list[str]
) -> AsyncIterator[Lookout]:
    lookout_service.model.responder = camera_model
    yield lookout_service
    lookout_service.model.reset()


async def direct_search(lookout: Lookout, user: str) -> dict[str, Any]:
    """``search_objects`` for cars, run directly as a lookout user (what the tool gives)."""
    body = {"tool_name": "search_objects", "arguments": {"label": "car", "limit": 100}}
    reply = await lookout.request("tool", body, user=user)
    assert reply["type"] == "done", reply
    return reply["result"]  # type: ignore[no-any-return]


async def test_a_question_that_needs_a_tool_round_is_answered(
    homeassistant: HomeAssistant, agent: Lookout
) -> None:
    result = await ask(homeassistant.ws, "Were there any cars today?")
    assert result["response"]["response_type"] == "action_done", result
    expected = found_cars(await direct_search(agent, "homeassistant"))
    assert speech(result) == expected
    assert expected.startswith("I found 3 cars, on garage, porch")  # only this module's cars
    # lookout ran the tool round: the model's second request carries the tool's result.
    chat = [r for r in agent.fake.requests if r.messages and r.messages[-1]["role"] == "tool"]
    assert chat and json.loads(chat[-1].messages[-1]["content"])["count"] == 3


async def test_a_follow_up_continues_lookout_s_conversation(
    homeassistant: HomeAssistant, agent: Lookout
) -> None:
    first = await ask(homeassistant.ws, "Who came by this morning?")
    conversation_id = first["conversation_id"]
    assert conversation_id and speech(first) == "lookout heard: Who came by this morning?"
    follow = await ask(homeassistant.ws, "And in the afternoon?", conversation_id)
    assert follow["conversation_id"] == conversation_id
    assert speech(follow) == "lookout heard: And in the afternoon?"
    sent = agent.fake.requests[-1].messages
    assert [question_of(m) for m in sent if m["role"] == "user"][-2:] == [
        "Who came by this morning?",
        "And in the afternoon?",
    ]
    # Home Assistant's conversation id is lookout's: lookout holds the conversation.
    held = await agent.request("chat", {"text": "and tonight?", "conversation_id": conversation_id})
    assert held["type"] == "done" and held["conversation_id"] == conversation_id, held
    assert [question_of(m) for m in agent.fake.requests[-1].messages if m["role"] == "user"][
        -3:
    ] == ["Who came by this morning?", "And in the afternoon?", "and tonight?"]


async def test_a_mapped_user_asks_as_their_lookout_user(
    homeassistant: HomeAssistant, agent: Lookout, porch_viewer: HaUser
) -> None:
    result = await ask(porch_viewer.ws, "Any cars?")
    expected = found_cars(await direct_search(agent, "porch_viewer"))
    assert speech(result) == expected == "I found 1 cars, on porch."


async def test_lookout_s_error_becomes_an_assist_error_in_words(
    homeassistant: HomeAssistant, agent: Lookout
) -> None:
    agent.model.responder = None
    agent.model.chat_reply = error(503, "the model server is down")
    result = await ask(homeassistant.ws, "Is anyone at the door?")
    response = result["response"]
    assert response["response_type"] == "error", result
    words = speech(result)
    assert words.startswith("lookout's language model cannot be reached right now."), words
    assert "503" in words or "unavailable" in words, words
    agent.model.chat_reply = None
    again = await ask(homeassistant.ws, "Is anyone at the door now?")
    assert speech(again) == "lookout heard: Is anyone at the door now?"


async def test_no_answer_within_the_timeout_is_said_not_waited_for(
    homeassistant: HomeAssistant, agent: Lookout, lookout_integration: dict[str, Any]
) -> None:
    entry_id = lookout_integration["entry_id"]
    timeout_s = 5
    await options_flow(
        homeassistant, entry_id, "settings", {"lookout_user": "homeassistant", "timeout": timeout_s}
    )
    try:
        agent.model.responder = None
        agent.model.chat_reply = hang()
        started = time.monotonic()
        result = await ask(homeassistant.ws, "Is the gate open?")
        waited = time.monotonic() - started
        assert result["response"]["response_type"] == "error", result
        assert speech(result) == f"lookout did not answer within {timeout_s} seconds."
        assert timeout_s <= waited < timeout_s + 5, waited
    finally:
        agent.model.chat_reply = None
        await options_flow(
            homeassistant, entry_id, "settings", {"lookout_user": "homeassistant", "timeout": 120}
        )
    # The integration cancelled lookout's chat: lookout is free for the next question.
    after = await ask(homeassistant.ws, "Is the gate open now?")
    assert speech(after) == "lookout heard: Is the gate open now?"


async def test_an_assist_pipeline_streams_the_answer(
    homeassistant: HomeAssistant, agent: Lookout
) -> None:
    events = await run_pipeline(homeassistant, "Tell me slowly how the cameras are.")
    kinds = [e["type"] for _, e in events]
    assert kinds[0] == "run-start" and kinds[-1] == "run-end" and "error" not in kinds, events
    (ended,) = [(t, e) for t, e in events if e["type"] == "intent-end"]
    output = ended[1]["data"]["intent_output"]
    assert output["response"]["speech"]["plain"]["speech"] == SLOW_ANSWER
    deltas = [
        (t, e["data"]["chat_log_delta"])
        for t, e in events
        if e["type"] == "intent-progress" and "chat_log_delta" in (e.get("data") or {})
    ]
    version = (await homeassistant.ws.command({"type": "get_config"}))["version"]
    if not streams(version):
        assert deltas == []
        return
    pieces = [(t, d["content"]) for t, d in deltas if d.get("content")]
    assert "".join(p for _, p in pieces) == SLOW_ANSWER
    # Streamed: the answer came in pieces, the first long before the answer was whole.
    assert len(pieces) >= 3, pieces
    assert ended[0] - pieces[0][0] >= (SLOW_PIECES - 2) * SLOW_GAP_S, (pieces, ended[0])


async def test_the_model_s_reasoning_goes_to_the_chat_log_where_it_can(
    homeassistant: HomeAssistant, agent: Lookout, lookout_integration: dict[str, Any]
) -> None:
    events = await run_pipeline(homeassistant, "Think: is anyone at the door?")
    (ended,) = [e for _, e in events if e["type"] == "intent-end"]
    assert ended["data"]["intent_output"]["response"]["speech"]["plain"]["speech"] == (
        THOUGHT_ANSWER
    )
    deltas = [
        e["data"]["chat_log_delta"]
        for _, e in events
        if e["type"] == "intent-progress" and "chat_log_delta" in (e.get("data") or {})
    ]
    entry_id = lookout_integration["entry_id"]
    diagnostics = await homeassistant.api("GET", f"/api/diagnostics/config_entry/{entry_id}")
    thought = "".join(d.get("thinking_content") or "" for d in deltas)
    # 2026.2 takes thinking content; 2025.4 has no place for it (and 2024.11 no chat log).
    assert thought == (THOUGHT if diagnostics["data"]["home_assistant"]["thinking_content"] else "")

"""The package's ``script.lookout_ask`` and the README's caller of it, in the real Home
Assistant against the real lookout: answers and lookout's error replies, many times in a
row, with a model that answers at once (lookout replies before Home Assistant's
subscription is active: the race) and with a slow one."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from tests.fake_llm import error
from tests.peers.homeassistant.harness import HomeAssistant
from tests.peers.homeassistant.lookout import Lookout, answer_to, question_of

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(600)]

IN_A_ROW = 10
WAIT_S = 10
"""The script's ``wait_s`` (its least): a lost reply costs a test this long, not 120 s."""


def question(n: int) -> str:
    return f"Was anyone at the door? ({n}, {uuid.uuid4().hex[:6]})"


async def ask(ha: HomeAssistant, text: str, **fields: Any) -> dict[str, Any]:
    """``script.lookout_ask`` as an automation calls it, with a response variable."""
    data = {"question": text, "wait_s": WAIT_S, **fields}
    response = await ha.call_service(
        "script", "lookout_ask", data, return_response=True, timeout=WAIT_S + 30
    )
    assert isinstance(response, dict), response
    return response


async def test_ten_asks_in_a_row_of_an_instant_model_all_get_their_answers(
    homeassistant: HomeAssistant, lookout: Lookout
) -> None:
    got = []
    for n in range(IN_A_ROW):
        text = question(n)
        got.append((text, await ask(homeassistant, text)))
    lost = [(text, r) for text, r in got if not r.get("ok")]
    assert lost == [], f"{len(lost)} of {IN_A_ROW} asks got no answer: {lost[:3]}"
    for text, response in got:
        assert response["answer"] == answer_to(text)
        assert response["error"] is None and response["conversation_id"]


async def test_ten_asks_at_once_of_a_slow_model_all_get_their_answers(
    homeassistant: HomeAssistant, lookout: Lookout
) -> None:
    lookout.model.delay_s = 2.0
    texts = [question(n) for n in range(IN_A_ROW)]
    responses = await asyncio.gather(*(ask(homeassistant, t) for t in texts))
    assert [r["answer"] for r in responses] == [answer_to(t) for t in texts]
    assert all(r["ok"] for r in responses)


async def test_a_follow_up_continues_the_conversation(
    homeassistant: HomeAssistant, lookout: Lookout
) -> None:
    first = await ask(homeassistant, "Who came by today?")
    assert first["ok"], first
    follow = await ask(homeassistant, "And after that?", conversation_id=first["conversation_id"])
    assert follow["ok"] and follow["conversation_id"] == first["conversation_id"]
    last = lookout.fake.requests[-1].messages
    assert [question_of(m) for m in last if m["role"] == "user"][-2:] == [
        "Who came by today?",
        "And after that?",
    ]


async def test_lookout_s_error_replies_reach_the_caller(
    homeassistant: HomeAssistant, lookout: Lookout
) -> None:
    lookout.model.chat_reply = error(401, "bad key")
    refused = await ask(homeassistant, question(0))
    assert refused["ok"] is False and refused["answer"] is None
    assert refused["error"]["code"] == "llm_auth", refused
    invalid = await ask(homeassistant, question(1), conversation_id="no spaces allowed")
    assert invalid["ok"] is False and invalid["error"]["code"] == "invalid_request", invalid


async def test_without_a_model_every_ask_gets_llm_unavailable(
    homeassistant: HomeAssistant, lookout: Lookout
) -> None:
    await lookout.ensure(homeassistant, llm=None)
    for n in range(3):
        response = await ask(homeassistant, question(n))
        assert response["ok"] is False, response
        assert response["error"]["code"] == "llm_unavailable", response


async def test_the_example_caller_shows_the_answer_in_a_notification(
    homeassistant: HomeAssistant, lookout: Lookout
) -> None:
    text = question(0)
    async with homeassistant.subscription({"type": "persistent_notification/subscribe"}) as sub:
        await homeassistant.call_service(
            "script", "lookout_announce_answer", {"question": text}, timeout=WAIT_S + 30
        )
        event = await sub.wait_for(
            lambda e: any(
                n.get("title") == f"lookout: {text}" for n in e["notifications"].values()
            ),
            timeout=10,
        )
    (shown,) = [n for n in event["notifications"].values() if n["title"] == f"lookout: {text}"]
    assert shown["message"] == answer_to(text)


async def test_the_readme_s_caller_notifies_the_answer_and_the_error(
    homeassistant: HomeAssistant, lookout: Lookout
) -> None:
    text = question(0)
    await homeassistant.call_service("script", "readme_ask", {"question": text}, timeout=60)
    push = await homeassistant.push.wait_for(lambda p: p.message == answer_to(text), 10)
    assert push.title is None
    lookout.model.chat_reply = error(401, "bad key")
    expected = (await ask(homeassistant, question(1)))["error"]["message"]
    pushed = len(homeassistant.push.received)
    await homeassistant.call_service("script", "readme_ask", {"question": question(2)}, timeout=60)
    push = await homeassistant.push.wait_for(
        lambda p: p in homeassistant.push.received[pushed:], 10
    )
    assert push.message == expected

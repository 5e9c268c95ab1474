"""The real ``lookout run`` against a real llama.cpp server, over a real broker.

The scripted model (see ``model.py``) answers by trigger word: ``gravel`` a plain answer,
``cars`` a ``search_objects`` call, ``everywhere`` two ``get_live_context`` calls,
``ponder`` a reasoning block, ``forever`` an endless answer, ``giraffe``/``unicorn`` a
watch verdict; after a tool result it answers in words.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.frigate_replay import SNAPSHOT_JPEG
from tests.mqttc import MqttTestClient, next_message, request, until_terminal
from tests.peers.llamacpp.model import (
    AFTER_SEARCH_ANSWER,
    AFTER_TWO_CALLS_ANSWER,
    PLAIN_ANSWER,
    THINK_ANSWER,
    THINK_REASONING,
)
from tests.peers.llamacpp.server import LlamaServer

pytestmark = pytest.mark.e2e

USER = "alice"


async def start(worker_factory, broker, mqtt, llm: dict[str, Any], **config: Any) -> str:
    prefix = f"lk{uuid.uuid4().hex[:8]}"
    cfg = {
        "llm": llm,
        "frigate": {"topic_prefix": f"{prefix}fr"},
        "users": {USER: {"role": "admin"}},
        **config,
    }
    worker = worker_factory(broker, prefix=prefix, config=cfg)
    worker.start()
    await worker.wait_online(mqtt)
    start.worker = worker  # type: ignore[attr-defined]
    return prefix


async def chat(
    mqtt: MqttTestClient, prefix: str, timeout: float = 60, **body: Any
) -> list[dict[str, Any]]:
    return await request(mqtt, prefix, USER, "chat", body, timeout=timeout)


def content(replies: list[dict[str, Any]]) -> str:
    return "".join(r["delta"] for r in replies if r["type"] == "content")


async def watch_giraffes(mqtt: MqttTestClient, prefix: str) -> dict[str, Any]:
    """Start a watch on a camera with one frame; return its alert (the model says met)."""
    await mqtt.publish(f"{prefix}/camera/garden/frame", SNAPSHOT_JPEG, qos=0)
    alerts = await mqtt.subscribe(f"{prefix}/{USER}/watch/+/alert")
    body = {"action": "start", "camera": "garden", "condition": "a giraffe on the lawn"}
    replies = await request(mqtt, prefix, USER, "watch", body, timeout=60)
    assert replies[-1]["type"] == "done", replies[-1]
    return dict((await next_message(alerts, timeout=60)).json())


def requests_served(server: LlamaServer) -> int:
    """Completions the server ran (a request it refuses before running counts not)."""
    log = Path(server.log_path).read_text(errors="replace")
    return len(re.findall(r"launch_slot_: .*processing task", log))


async def test_streamed_and_unstreamed_answers(llama_server, worker_factory, broker, mqtt):
    prefix = await start(worker_factory, broker, mqtt, llama_server.lookout_llm())
    streamed = await chat(mqtt, prefix, text="How is the gravel path?")
    done = streamed[-1]
    assert done["type"] == "done", done
    assert done["message"]["content"] == PLAIN_ANSWER
    assert content(streamed) == PLAIN_ANSWER
    assert sum(1 for r in streamed if r["type"] == "content") >= 1
    plain = await chat(mqtt, prefix, text="gravel?", stream=False)
    assert [r["type"] for r in plain] == ["done"]
    assert plain[0]["message"]["content"] == PLAIN_ANSWER


async def test_a_tool_round_and_two_calls_in_one_turn(llama_server, worker_factory, broker, mqtt):
    prefix = await start(worker_factory, broker, mqtt, llama_server.lookout_llm())
    one = await chat(mqtt, prefix, text="Were there any cars today?")
    assert one[-1]["type"] == "done", one[-1]
    calls = [r for r in one if r["type"] == "tool_call"]
    assert [(c["name"], c["arguments"]) for c in calls] == [("search_objects", {"label": "car"})]
    assert one[-1]["message"]["content"] == AFTER_SEARCH_ANSWER
    assert one[-1]["tool_iterations"] == 1
    two = await chat(mqtt, prefix, text="Look everywhere")
    assert two[-1]["type"] == "done", two[-1]
    calls = [r for r in two if r["type"] == "tool_call"]
    assert [c["arguments"]["camera"] for c in calls] == ["front_door", "back_yard"]
    assert len({c["call_id"] for c in calls}) == 2
    assert two[-1]["message"]["content"] == AFTER_TWO_CALLS_ANSWER


async def test_reasoning_on_and_off(llama_server, worker_factory, broker, mqtt):
    prefix = await start(worker_factory, broker, mqtt, llama_server.lookout_llm())
    on = await chat(mqtt, prefix, text="ponder the garage", enable_thinking=True)
    done = on[-1]
    assert done["message"]["content"] == THINK_ANSWER
    assert done["message"]["reasoning"] == THINK_REASONING
    assert "".join(r["delta"] for r in on if r["type"] == "reasoning") == THINK_REASONING
    off = await chat(mqtt, prefix, text="ponder the garage", enable_thinking=False, stream=False)
    assert off[-1]["message"]["content"] == THINK_ANSWER
    assert "reasoning" not in off[-1]["message"]


async def test_a_conversation_continues(llama_server, worker_factory, broker, mqtt):
    prefix = await start(worker_factory, broker, mqtt, llama_server.lookout_llm())
    first = await chat(mqtt, prefix, text="Were there cars?")
    conversation = first[-1]["conversation_id"]
    # No trigger in the follow-up: the server sees the whole conversation, whose latest
    # trigger is the earlier tool result, so the model answers from it.
    second = await chat(mqtt, prefix, text="And then?", conversation_id=conversation)
    assert second[-1]["type"] == "done", second[-1]
    assert second[-1]["conversation_id"] == conversation
    assert second[-1]["message"]["content"] == AFTER_SEARCH_ANSWER
    assert not [r for r in second if r["type"] == "tool_call"]


async def test_many_requests_in_a_row(llama_server, worker_factory, broker, mqtt):
    # llama-server closes the connection after every stream although it says keep-alive:
    # lookout must not fail the next request on the dead pooled connection.
    prefix = await start(worker_factory, broker, mqtt, llama_server.lookout_llm(max_retries=0))
    for _ in range(8):
        replies = await chat(mqtt, prefix, text="gravel")
        assert replies[-1]["type"] == "done", replies[-1]


async def test_context_overflow(make_llama_server, worker_factory, broker, mqtt):
    small = make_llama_server(ctx_size=256, parallel=1)
    prefix = await start(worker_factory, broker, mqtt, small.lookout_llm())
    replies = await chat(mqtt, prefix, text="gravel")
    assert replies[-1]["type"] == "error"
    assert replies[-1]["error"]["code"] == "llm_context_overflow"


async def test_wrong_api_key_and_server_down(make_llama_server, worker_factory, broker, mqtt):
    keyed = make_llama_server(api_key="right")
    prefix = await start(worker_factory, broker, mqtt, keyed.lookout_llm(api_key="wrong"))
    replies = await chat(mqtt, prefix, text="gravel")
    assert replies[-1]["error"]["code"] == "llm_auth"
    assert "wrong" not in str(replies)
    keyed.stop()
    down = await chat(mqtt, prefix, text="gravel")
    assert down[-1]["error"]["code"] == "llm_unavailable"


async def test_server_killed_mid_stream(make_llama_server, worker_factory, broker, mqtt):
    server = make_llama_server()
    prefix = await start(worker_factory, broker, mqtt, server.lookout_llm())
    rid = uuid.uuid4().hex[:12]
    queue = await mqtt.subscribe(f"{prefix}/{USER}/reply/{rid}")
    await mqtt.publish(f"{prefix}/{USER}/chat", {"id": rid, "text": "tell it forever"})
    while (await next_message(queue, timeout=60)).json()["type"] != "content":
        pass
    server.kill()
    replies = await until_terminal(queue, rid, timeout=60)
    assert [r["type"] for r in replies].count("error") == 1
    assert replies[-1]["type"] == "error"
    assert replies[-1]["error"]["code"] in ("llm_error", "llm_unavailable")


async def test_out_of_tokens_is_not_out_of_steps(llama_server, worker_factory, broker, mqtt):
    llm = llama_server.lookout_llm(extra_body={"max_tokens": 4})
    prefix = await start(worker_factory, broker, mqtt, llm)
    thinking = await chat(mqtt, prefix, text="ponder", enable_thinking=True, stream=False)
    done = thinking[-1]
    assert done["type"] == "done" and done["finish_reason"] == "length"
    assert "ran out of output tokens" in done["message"]["content"]
    assert "thinking" in done["notes"][0]
    assert "allowed number of steps" not in done["message"]["content"]
    # A tool call cut off by the limit is not run.
    cut = await chat(mqtt, prefix, text="cars")
    assert not [r for r in cut if r["type"] in ("tool_call", "tool_result")]
    assert cut[-1]["finish_reason"] == "length"
    assert "tool call" in cut[-1]["notes"][0]


async def test_a_client_held_chain_may_carry_server_fields(
    llama_server, worker_factory, broker, mqtt
):
    prefix = await start(worker_factory, broker, mqtt, llama_server.lookout_llm())
    messages = [
        {"role": "user", "content": "ponder"},
        {
            "role": "assistant",
            "content": THINK_ANSWER,
            "reasoning_content": THINK_REASONING,
            "reasoning": THINK_REASONING,
            "refusal": None,
            "annotations": [],
        },
        {"role": "user", "content": "gravel, please"},
    ]
    replies = await chat(mqtt, prefix, messages=messages, stream=False)
    assert replies[-1]["type"] == "done", replies[-1]
    assert replies[-1]["message"]["content"] == PLAIN_ANSWER


async def test_a_text_only_server_is_not_unavailable(llama_server, worker_factory, broker, mqtt):
    # llama.cpp without --mmproj answers images with HTTP 500 "image input is not supported".
    prefix = await start(worker_factory, broker, mqtt, llama_server.lookout_llm())
    await mqtt.publish(f"{prefix}/camera/front_door/frame", SNAPSHOT_JPEG, qos=0)
    worker = start.worker  # type: ignore[attr-defined]
    before = requests_served(llama_server)
    replies = await chat(mqtt, prefix, text="Look everywhere")
    done = replies[-1]
    assert done["type"] == "done", done
    assert done["message"]["content"] == AFTER_TWO_CALLS_ANSWER
    assert any("cannot take images" in note for note in done["notes"])
    assert requests_served(llama_server) - before == 2  # the tool turn and the answer
    log = worker.log_text()
    assert log.count('"llm_images_rejected"') == 1  # refused once, resent without images
    assert '"llm_retry"' not in log and '"llm_turn_failed"' not in log
    again = await chat(mqtt, prefix, text="Look everywhere")
    assert again[-1]["type"] == "done"
    assert any("cannot take images" in note for note in again[-1]["notes"])
    # Remembered for the provider: no image is sent again, so nothing is refused again.
    assert worker.log_text().count('"llm_images_rejected"') == 1


async def test_a_watch_with_a_real_json_schema_verdict(
    llama_vision_server, worker_factory, broker, mqtt
):
    prefix = await start(worker_factory, broker, mqtt, llama_vision_server.lookout_llm())
    alert = await watch_giraffes(mqtt, prefix)
    assert alert["end_reason"] == "condition_met" or alert.get("status") == "success", alert
    assert "Giraffe alert" in str(alert)


async def test_a_watch_on_a_server_that_cannot_see_stops_at_once(
    llama_server, worker_factory, broker, mqtt
):
    prefix = await start(worker_factory, broker, mqtt, llama_server.lookout_llm())
    alert = await watch_giraffes(mqtt, prefix)
    assert "cannot take images" in str(alert), alert

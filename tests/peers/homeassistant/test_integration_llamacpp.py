"""One Assist question through lookout to the real llama.cpp server (the sibling tier's
scripted model, ``tests/peers/llamacpp``): for ``cars`` it calls ``search_objects``, and
after the tool's result it says "I found 1 car." The question goes through an Assist
pipeline, which streams the answer where the release can."""

from __future__ import annotations

from typing import Any

import pytest

from tests.peers.homeassistant.harness import HomeAssistant
from tests.peers.homeassistant.lookout import LOOKOUT_USERS, Lookout, run_pipeline, streams

# The sibling tier's fixtures (the server binary, built at collection; the scripted model).
from tests.peers.llamacpp.conftest import llama_binary, llama_model, llama_server  # noqa: F401
from tests.peers.llamacpp.model import AFTER_SEARCH_ANSWER
from tests.peers.llamacpp.server import LlamaServer

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(300)]


async def test_assist_asks_lookout_which_asks_the_real_llama_cpp_server(
    homeassistant: HomeAssistant,
    lookout_integration: dict[str, Any],
    lookout_service: Lookout,
    llama_server: LlamaServer,  # noqa: F811
) -> None:
    await lookout_service.start(homeassistant, users=LOOKOUT_USERS, llm=llama_server.lookout_llm())
    try:
        events = await run_pipeline(homeassistant, "Were there any cars today?")
    finally:
        await lookout_service.start(homeassistant, users=LOOKOUT_USERS)
    kinds = [e["type"] for _, e in events]
    assert "error" not in kinds, events
    (ended,) = [e for _, e in events if e["type"] == "intent-end"]
    response = ended["data"]["intent_output"]["response"]
    assert response["response_type"] == "action_done", response
    assert response["speech"]["plain"]["speech"] == AFTER_SEARCH_ANSWER
    deltas = [
        e["data"]["chat_log_delta"]
        for _, e in events
        if e["type"] == "intent-progress" and "chat_log_delta" in (e.get("data") or {})
    ]
    version = (await homeassistant.ws.command({"type": "get_config"}))["version"]
    if not streams(version):
        assert deltas == []
        return
    assert "".join(d.get("content") or "" for d in deltas) == AFTER_SEARCH_ANSWER
    entry_id = lookout_integration["entry_id"]
    diagnostics = await homeassistant.api("GET", f"/api/diagnostics/config_entry/{entry_id}")
    if diagnostics["data"]["home_assistant"]["external_tool_calls"]:
        # The chat log also shows lookout's tool round, marked as run outside Home Assistant.
        (called,) = [c for d in deltas for c in d.get("tool_calls") or []]
        assert called["tool_name"] == "search_objects" and called["external"] is True
        assert called["tool_args"] == {"label": "car"}
        (result,) = [d for d in deltas if d.get("role") == "tool_result"]
        assert result["tool_call_id"] == called["id"] and "objects" in result["tool_result"]

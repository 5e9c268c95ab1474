"""The shipped examples with a real model server: ``script.lookout_ask`` and the blueprint
in the real Home Assistant, against the real lookout, which asks the real llama.cpp server
(the sibling tier's scripted model, ``tests/peers/llamacpp``).

For "cars" the scripted model calls ``search_objects`` and, after the tool's result, says
``AFTER_SEARCH_ANSWER``; for a condition with "giraffe" its verdict is met, with the
notification message "Giraffe alert in the garden." (the vision server takes the frame).
"""

from __future__ import annotations

import json
import uuid

import pytest

from tests.peers.homeassistant.harness import HomeAssistant
from tests.peers.homeassistant.lookout import RED, Lookout
from tests.peers.homeassistant.test_ask import ask
from tests.peers.homeassistant.test_watch import run_blueprint, set_automations, titled

# The sibling tier's fixtures (the server binary, built at collection; the scripted model).
from tests.peers.llamacpp.conftest import (  # noqa: F401
    llama_binary,
    llama_model,
    llama_projector,
    llama_server,
    llama_vision_server,
)
from tests.peers.llamacpp.model import AFTER_SEARCH_ANSWER, VERDICT_MET
from tests.peers.llamacpp.server import LlamaServer

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(300)]

IN_A_ROW = 3


async def test_the_ask_script_gets_the_real_model_s_answer_after_a_tool_round(
    homeassistant: HomeAssistant,
    lookout: Lookout,
    llama_server: LlamaServer,  # noqa: F811
) -> None:
    await lookout.start(homeassistant, llm=llama_server.lookout_llm())
    log_start = lookout.log_size()  # the log file holds the earlier tests' runs too
    for n in range(IN_A_ROW):
        response = await ask(homeassistant, f"Were there any cars today? ({n})", wait_s=60)
        assert response["ok"], (n, response)
        assert response["answer"] == AFTER_SEARCH_ANSWER
        assert response["error"] is None and response["conversation_id"]
    # Each answer came after a tool round: lookout ran search_objects for the model.
    calls = [
        json.loads(line)
        for line in lookout.log_text(log_start).splitlines()
        if '"tool_called"' in line and '"search_objects"' in line
    ]
    assert len(calls) >= IN_A_ROW and all(c["ok"] for c in calls), calls


async def test_the_blueprint_tells_the_phone_what_the_real_model_saw(
    homeassistant: HomeAssistant,
    lookout: Lookout,
    llama_vision_server: LlamaServer,  # noqa: F811
) -> None:
    await set_automations(homeassistant, set())
    await lookout.start(homeassistant, llm=llama_vision_server.lookout_llm())
    what = f"a giraffe is on the lawn ({uuid.uuid4().hex[:6]})"
    await lookout.frame("porch", RED)
    await run_blueprint(homeassistant, "porch", what, minutes=5)
    push = await homeassistant.push.wait_for(titled(f"porch: {what}"), 60)
    assert push.message == VERDICT_MET["notification_message"], push
    assert push.data["entity_id"] == "image.lookout_alert_snapshot"

"""lookout's tools as an LLM API of Home Assistant (``homeassistant.helpers.llm``).

Any conversation agent that lets its user pick LLM APIs (OpenAI, Ollama, Google,
Anthropic …) can switch on "lookout" and then call the tools lookout retains on
``<prefix>/tools``. A call runs as a lookout ``tool`` request, made as the lookout user
of the Home Assistant user who is talking (so lookout's rights apply: a viewer of one
camera sees nothing of another). The tools follow lookout's retained list: a new list
is read as it arrives and offered from the next request of an agent on.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import voluptuous as vol
from homeassistant.core import HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import llm

from .client import LookoutError
from .const import DEFAULT_PREFIX
from .words import describe_error

if TYPE_CHECKING:
    from collections.abc import Callable

    from . import LookoutRuntime

_LOGGER = logging.getLogger(__name__)

DATA_APIS = "lookout_llm_apis"
"""hass.data key: the LookoutAPI objects registered with the llm helper, by API id."""

API_PROMPT = (
    "The lookout tools answer questions about this home's security cameras (Frigate): "
    "what the cameras recorded (who or what came by, when, where), what a camera sees "
    "right now, camera settings, and watches that notify the user when something "
    "happens. Use them for any such question instead of guessing; leave the camera "
    "out to search every camera the user may see. Times are the home's local time."
)


def api_id_for(prefix: str) -> str:
    """The LLM API id of the lookout at ``prefix`` (stable, so agents keep their choice)."""
    if prefix == DEFAULT_PREFIX:
        return "lookout"
    return "lookout-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in prefix)


def api_name_for(prefix: str) -> str:
    """The name agents show for the API."""
    return "lookout" if prefix == DEFAULT_PREFIX else f"lookout ({prefix})"


# -- JSON schema (lookout's tool parameters) to voluptuous (what llm.Tool carries) ---------


def schema_from_json(parameters: Any) -> vol.Schema:
    """A voluptuous schema for an object of JSON schema ``parameters``.

    Agents turn ``Tool.parameters`` back into JSON schema with voluptuous-openapi, so
    only what it renders is used: object properties with their descriptions and
    ``required``, strings, integers and numbers (with ``minimum``/``maximum``), booleans,
    string enums and arrays. A nullable property (``anyOf: [X, null]``, pydantic's
    ``Optional``) becomes ``X``: leaving it out means the same to lookout.
    """
    if not isinstance(parameters, dict):
        return vol.Schema({})
    properties = parameters.get("properties")
    required = set(parameters.get("required") or [])
    fields: dict[Any, Any] = {}
    for name, spec in (properties or {}).items():
        description = spec.get("description") if isinstance(spec, dict) else None
        marker = vol.Required if name in required else vol.Optional
        key = marker(name, description=description) if description else marker(name)
        fields[key] = _validator(spec)
    return vol.Schema(fields)


_NUMBERS = {"integer": int, "number": float}


def _validator(spec: Any) -> Any:
    spec = _without_null(spec)
    kind = spec.get("type") if isinstance(spec, dict) else None
    validator: Any = str
    if isinstance(spec, dict) and isinstance(spec.get("enum"), list) and spec["enum"]:
        validator = vol.In(spec["enum"])
    elif kind in _NUMBERS:
        validator = vol.Coerce(_NUMBERS[kind])
        bounds = {k: spec[b] for k, b in (("min", "minimum"), ("max", "maximum")) if b in spec}
        if bounds:
            validator = vol.All(validator, vol.Range(**bounds))
    elif kind == "boolean":
        validator = bool
    elif kind == "array":
        validator = [_validator(spec.get("items", {"type": "string"}))]
    elif kind == "object":
        validator = schema_from_json(spec) if spec.get("properties") else dict
    return validator


def _without_null(spec: Any) -> Any:
    """``X`` for ``{"anyOf": [X, {"type": "null"}]}``; the spec itself otherwise."""
    if not isinstance(spec, dict) or not isinstance(spec.get("anyOf"), list):
        return spec
    options = [s for s in spec["anyOf"] if not (isinstance(s, dict) and s.get("type") == "null")]
    if len(options) != 1:
        return spec
    return {**{k: v for k, v in spec.items() if k != "anyOf"}, **options[0]}


# -- the API ---------------------------------------------------------------------------------


class LookoutTool(llm.Tool):
    """One of lookout's tools, run as a lookout ``tool`` request."""

    def __init__(self, api: LookoutAPI, definition: dict[str, Any]) -> None:
        """Build the tool from lookout's OpenAI function definition."""
        function = definition["function"]
        self.api = api
        self.name = function["name"]
        self.description = function.get("description")
        self.parameters = schema_from_json(function.get("parameters"))

    async def async_call(
        self, hass: HomeAssistant, tool_input: llm.ToolInput, llm_context: llm.LLMContext
    ) -> dict[str, Any]:
        """Run the tool with the rights of the caller's lookout user."""
        runtime = self.api.runtime
        if runtime is None:
            raise HomeAssistantError("lookout is not loaded")
        context = llm_context.context
        user = runtime.lookout_user(context.user_id if context else None)
        body = {"tool_name": self.name, "arguments": tool_input.tool_args}
        try:
            done = await runtime.client.async_call(user, "tool", body, runtime.timeout)
        except LookoutError as err:
            raise HomeAssistantError(describe_error(err, user)) from err
        result = done.get("result")
        return result if isinstance(result, dict) else {"result": result}


class LookoutAPI(llm.API):
    """The tools of one lookout, for any agent that turns the API on."""

    def __init__(self, hass: HomeAssistant, api_id: str, name: str) -> None:
        """Register under ``api_id``; the tools come from the runtime attached later."""
        super().__init__(hass=hass, id=api_id, name=name)
        self.runtime: LookoutRuntime | None = None
        self.tools: list[LookoutTool] = []
        self._remove_listener: Callable[[], None] | None = None

    @callback
    def attach(self, runtime: LookoutRuntime | None) -> None:
        """Serve the tools of ``runtime`` (None: the integration is unloaded)."""
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None
        self.runtime = runtime
        if runtime is not None:
            self._remove_listener = runtime.client.add_tools_listener(self._rebuild)
        self._rebuild()

    @callback
    def _rebuild(self) -> None:
        definitions = self.runtime.client.tools if self.runtime is not None else []
        tools = []
        for definition in definitions:
            try:
                tools.append(LookoutTool(self, definition))
            except (KeyError, TypeError, ValueError, vol.Invalid) as err:
                _LOGGER.warning("lookout tool %s skipped: %s", definition.get("function"), err)
        self.tools = tools
        _LOGGER.debug("lookout tools: %s", [t.name for t in tools])

    async def async_get_api_instance(self, llm_context: llm.LLMContext) -> llm.APIInstance:
        """The tools as lookout offers them now."""
        if self.runtime is None:
            raise HomeAssistantError("lookout is not loaded")
        prompt = API_PROMPT
        if not self.tools:
            prompt += " lookout has not published its tools yet: it may not be running."
        return llm.APIInstance(
            api=self, api_prompt=prompt, llm_context=llm_context, tools=list(self.tools)
        )


@callback
def async_register_api(hass: HomeAssistant, runtime: LookoutRuntime) -> Callable[[], None]:
    """Offer the tools of ``runtime`` to agents; the returned callable withdraws them.

    Where ``llm.async_register_api`` returns no way to unregister (2024.11 does not),
    the API stays registered after an unload and says that lookout is not loaded, and
    a later setup of the same entry attaches to it again.
    """
    apis: dict[str, LookoutAPI] = hass.data.setdefault(DATA_APIS, {})
    api_id = api_id_for(runtime.prefix)
    api = apis.get(api_id)
    unregister: Callable[[], None] | None = None
    if api is None:
        api = LookoutAPI(hass, api_id, api_name_for(runtime.prefix))
        unregister = llm.async_register_api(hass, api)
        apis[api_id] = api
    api.attach(runtime)

    @callback
    def withdraw() -> None:
        api.attach(None)
        if unregister is not None:
            unregister()
            apis.pop(api_id, None)

    return withdraw

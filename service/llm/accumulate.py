"""A tool-call accumulator that tolerates what real OpenAI-compatible servers stream.

The SDK's own stream helper indexes calls by ``tool_calls[].index`` and breaks when a
server leaves it out. Servers differ (see ``ecosystem.md`` §4):

- OpenAI: a header delta (``index``, ``id``, ``function.name``, ``arguments: ""``), then
  fragments carrying only ``index`` and a piece of ``arguments``.
- Gemini: no ``index``; whole calls; the id may be the function name (so two parallel
  calls to one tool share it); ``finish_reason: "stop"`` on a tool turn; a per-call
  ``extra_content`` (thought signature) that must be sent back on the next turn.
- Ollama and some proxies: every call at ``index: 0``, each whole, with different ids.
- Some servers send no ids, arguments as an object, or nothing at all for a
  parameterless tool.

Deltas are matched to calls by ``index`` when present, else by a known ``id``, else they
continue the last call (an id that arrives late, or a proxy that gives every chunk a
fresh id, must not split one call in two); a delta that obviously begins another call
(a different id with a name, or a function name arriving for a call that already has a
name and complete arguments) starts a new one even at a reused index. A delta that
repeats a finished call (same id and name, no new arguments: vLLM's trailing chunk)
changes nothing, so a side-effecting tool can never run twice because of it.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any

import structlog

log = structlog.get_logger(__name__)

# Fields of a streamed tool-call delta that we interpret; anything else is carried over.
_KNOWN_FIELDS = frozenset({"index", "id", "type", "function", "name", "arguments"})


@dataclass(frozen=True)
class ToolCall:
    """One complete tool call requested by the model.

    Attributes:
        id: The call id (generated ``call_<hex>`` when the server sent none; made unique
            when the server reused one).
        name: The function name.
        arguments_raw: The argument text as the model produced it (``"{}"`` when empty).
        arguments: The parsed arguments, or ``None`` when they are not a JSON object.
        arguments_error: Why ``arguments`` is ``None`` (to be returned to the model as a
            tool error rather than crashing the loop).
        extra: Unknown per-call fields (e.g. Gemini's ``extra_content``) to replay.
    """

    id: str
    name: str
    arguments_raw: str
    arguments: dict[str, Any] | None
    arguments_error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_message_dict(self) -> dict[str, Any]:
        """The entry for an assistant message's ``tool_calls`` list, replayable verbatim.

        Valid arguments are replayed exactly as the model wrote them; invalid ones are
        replaced by ``"{}"`` because servers that re-render the chat template (vLLM,
        llama.cpp) reject unparsable arguments in the history.
        """
        arguments = self.arguments_raw if self.arguments is not None else "{}"
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": arguments},
            **self.extra,
        }


def _get(obj: Any, key: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(key)
    return getattr(obj, key, None)


def _as_dict(delta: Any) -> dict[str, Any]:
    """Normalise an SDK ``ChoiceDeltaToolCall`` (pydantic, extra fields kept) or a dict."""
    if isinstance(delta, dict):
        return delta
    dump = getattr(delta, "model_dump", None)
    if callable(dump):
        result = dump(exclude_none=True)
        if isinstance(result, dict):
            return result
    raise ValueError(f"unsupported tool-call delta type {type(delta).__name__}")


def _merge_extra(into: dict[str, Any], new: dict[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge_extra(into[key], value)
        else:
            into[key] = value


def new_call_id() -> str:
    """A fresh ``call_<hex>`` id for a call the server did not name."""
    return f"call_{secrets.token_hex(12)}"


def parse_arguments(raw: str) -> tuple[dict[str, Any] | None, str | None]:
    """Parse tool-call argument text into a dict, or explain why it is not one.

    Empty text is ``{}`` (parameterless tools: vLLM and Ollama send nothing). A JSON
    string holding an object (double-encoded arguments, seen from small models) is
    decoded once more.
    """
    text = raw.strip()
    if not text:
        return {}, None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"arguments are not valid JSON ({exc.msg} at position {exc.pos})"
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None, "arguments are a JSON string, not an object"
    if value is None:
        return {}, None
    if not isinstance(value, dict):
        return None, f"arguments must be a JSON object, got {type(value).__name__}"
    return value, None


class _Partial:
    __slots__ = ("args", "extra", "id", "index", "name")

    def __init__(self, index: int | None) -> None:
        self.index = index
        self.id: str | None = None
        self.name: str | None = None
        self.args: list[str] = []
        self.extra: dict[str, Any] = {}

    def complete(self) -> bool:
        """Whether the arguments so far already form a whole JSON value."""
        text = "".join(self.args).strip()
        if not text:
            return False
        try:
            json.loads(text)
        except ValueError:
            return False
        return True


class ToolCallAccumulator:
    """Collects streamed tool-call deltas into whole :class:`ToolCall` objects.

    Feed every chunk's ``choices[0].delta.tool_calls`` to :meth:`feed`; call
    :meth:`result` once the stream ended.
    """

    def __init__(self) -> None:
        self._calls: list[_Partial] = []
        self._by_index: dict[int, _Partial] = {}
        self._by_id: dict[str, _Partial] = {}

    def __bool__(self) -> bool:
        return bool(self._calls)

    @property
    def fragments_seen(self) -> bool:
        """Whether any tool-call delta arrived (even one that produced no call)."""
        return bool(self._calls)

    def feed(self, deltas: Any) -> None:
        """Add one chunk's tool-call deltas (SDK objects or dicts; ``None`` is ignored)."""
        for raw in deltas or ():
            self._feed_one(_as_dict(raw))

    def _feed_one(self, d: dict[str, Any]) -> None:
        function = d.get("function") or {}
        index = d.get("index")
        index = index if isinstance(index, int) and not isinstance(index, bool) else None
        call_id = d.get("id") or None
        # Some servers (llama.cpp forks) put name/arguments beside `function` instead of in it.
        name = _get(function, "name") or d.get("name") or None
        arguments = _get(function, "arguments")
        if arguments is None:
            arguments = d.get("arguments")
        extra = {k: v for k, v in d.items() if k not in _KNOWN_FIELDS and v is not None}

        target = self._target(index, call_id)
        if target is not None and self._repeats(target, call_id, name, arguments):
            log.debug("tool_call_repeat_ignored", call_id=call_id, name=name)
            return
        if target is None or self._starts_new_call(target, call_id, name):
            target = _Partial(index)
            self._calls.append(target)
        if index is not None:
            self._by_index[index] = target
        if call_id is not None and target.id is None:
            target.id = call_id
        if target.id is not None:
            self._by_id[target.id] = target
        if name and not target.name:
            target.name = name
        if isinstance(arguments, str):
            target.args.append(arguments)
        elif isinstance(arguments, dict):
            # A server that sends the arguments as an object rather than JSON text.
            target.args.append(json.dumps(arguments, ensure_ascii=False))
        if extra:
            _merge_extra(target.extra, extra)

    def _target(self, index: int | None, call_id: str | None) -> _Partial | None:
        """The call a delta belongs to, before checking whether it starts a new one."""
        if index is not None:
            return self._by_index.get(index)
        if call_id is not None and call_id in self._by_id:
            return self._by_id[call_id]
        # No index and an unknown id: a late id, or a proxy's fresh id per chunk.
        return self._calls[-1] if self._calls else None

    @staticmethod
    def _repeats(target: _Partial, call_id: str | None, name: str | None, arguments: Any) -> bool:
        """Whether a delta only repeats ``target``, a call already whole."""
        if call_id is None or call_id != target.id or not target.complete():
            return False
        if name is not None and name != target.name:
            return False
        if isinstance(arguments, dict):
            arguments = json.dumps(arguments, ensure_ascii=False)
        # Gemini may name two parallel calls to one tool alike (id = function name): a
        # delta with other, whole arguments is a second call, not a repeat.
        return not arguments or arguments.strip() == "".join(target.args).strip()

    @staticmethod
    def _starts_new_call(target: _Partial, call_id: str | None, name: str | None) -> bool:
        if call_id is not None and target.id is not None and call_id != target.id:
            # A different id at the same index (Ollama puts every call at 0). A lone
            # argument fragment with a fresh id (some proxies re-id every chunk) still
            # continues the call while its arguments are incomplete.
            return name is not None or target.complete()
        if name is not None and target.name is not None:
            # A second function name for one call means a second call (Gemini reuses the
            # function name as id; servers without ids at all), unless the server repeats
            # the name on every fragment of an unfinished call.
            return name != target.name or target.complete()
        return False

    def result(self) -> list[ToolCall]:
        """The calls in the order they started, with unique ids and parsed arguments."""
        calls: list[ToolCall] = []
        used: set[str] = set()
        for partial in self._calls:
            if not partial.name:
                log.warning(
                    "tool_call_without_name_dropped",
                    call_id=partial.id,
                    arguments_chars=len("".join(partial.args)),
                )
                continue
            call_id = partial.id or new_call_id()
            if call_id in used:
                suffix = 2
                while f"{call_id}_{suffix}" in used:
                    suffix += 1
                call_id = f"{call_id}_{suffix}"
            used.add(call_id)
            raw = "".join(partial.args).strip()
            parsed, problem = parse_arguments(raw)
            calls.append(
                ToolCall(
                    id=call_id,
                    name=partial.name,
                    arguments_raw=raw or "{}",
                    arguments=parsed,
                    arguments_error=problem,
                    extra=partial.extra,
                )
            )
        return calls

"""The `lookout` commands that talk to a running lookout: health, ask, watch, tools, events.

Each sends requests through :mod:`service.cli.client` and renders the replies: tables and
one-line summaries on a terminal, the reply itself with ``--json``. An error reply is
printed as ``lookout: error <code>: <message>`` and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sys
import uuid
from collections.abc import Callable
from typing import Any

from service.cli.client import RequestTimeoutError, call, read_retained, send
from service.cli.render import Renderer, print_table, summarize
from service.homeassistant import parse_jobs
from service.mqtt import BusAuthError
from service.settings import Settings

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_INTERRUPTED = 130
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def dispatch(settings: Settings, args: argparse.Namespace) -> int:
    """Run one client command; return its exit code."""
    commands: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
        "health": _health,
        "ask": _ask,
        "watch": _watch,
        "tools": _tools,
        "events": _events,
    }
    try:
        return commands[args.command](settings, args)
    except RequestTimeoutError as exc:
        print(f"lookout: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except BusAuthError as exc:
        print(f"lookout: {exc}", file=sys.stderr)
        return EXIT_AUTH
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _request(
    settings: Settings,
    args: argparse.Namespace,
    kind: str,
    body: dict[str, Any],
    on_reply: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    return asyncio.run(
        call(settings, args.user, kind, body, on_reply=on_reply, timeout=args.timeout)
    )


def _failed(reply: dict[str, Any], args: argparse.Namespace) -> int | None:
    """Print an error reply (or the JSON of any reply); the exit code, or None to go on."""
    if args.json:
        print(json.dumps(reply, indent=2, ensure_ascii=False))
    if reply.get("type") == "done":
        return 0 if args.json else None
    if not args.json:
        error = reply.get("error") or {}
        print(
            f"lookout: error {error.get('code', '?')}: {error.get('message', 'no message')}",
            file=sys.stderr,
        )
    return EXIT_FAILED


# -- health ----------------------------------------------------------------------------


def _health(settings: Settings, args: argparse.Namespace) -> int:
    reply = _request(settings, args, "health", {})
    if (code := _failed(reply, args)) is not None:
        return code
    broker = reply.get("broker", {})
    print(
        f"lookout {reply.get('version')} up {reply.get('uptime_s', 0):.0f} s, "
        f"broker connected={broker.get('connected')} connects={broker.get('connects')}"
    )
    return 0


# -- ask -------------------------------------------------------------------------------


def _ask(settings: Settings, args: argparse.Namespace) -> int:
    text = " ".join(args.text)
    if text == "-":
        text = sys.stdin.read().strip()
    if not text:
        print("lookout: the question is empty", file=sys.stderr)
        return EXIT_USAGE
    request_id = uuid.uuid4().hex[:16]
    body: dict[str, Any] = {
        "id": request_id,
        "text": text,
        "stream": not (args.json or args.no_stream),
    }
    if args.conversation:
        body["conversation_id"] = args.conversation
    if args.max_tool_iterations is not None:
        body["max_tool_iterations"] = args.max_tool_iterations
    if args.thinking is not None:
        body["enable_thinking"] = args.thinking
    renderer = Renderer(sys.stdout, sys.stderr, show_reasoning=args.show_reasoning)
    try:
        reply = _request(
            settings, args, "chat", body, on_reply=None if args.json else renderer.reply
        )
    except KeyboardInterrupt:
        renderer.finish_line()
        print("lookout: interrupted; cancelling the request", file=sys.stderr)
        # If even the cancel cannot be sent, lookout's own deadline ends the request.
        with contextlib.suppress(RequestTimeoutError, BusAuthError):
            asyncio.run(send(settings, args.user, "chat/cancel", {"id": request_id}))
        return EXIT_INTERRUPTED
    if (code := _failed(reply, args)) is not None:
        renderer.finish_line()
        return code
    renderer.done(reply)
    return 0


# -- watch -----------------------------------------------------------------------------


def _split(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _watch(settings: Settings, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"action": args.action}
    if args.action == "start":
        body |= {"camera": args.camera, "condition": args.condition}
        optional = {
            "max_duration_minutes": args.minutes,
            "labels": _split(args.labels),
            "zones": _split(args.zones),
        }
        body |= {k: v for k, v in optional.items() if v is not None}
    elif args.action == "cancel":
        body["job_id"] = args.job_id
    reply = _request(settings, args, "watch", body)
    if (code := _failed(reply, args)) is not None:
        return code
    if args.action == "start":
        job_id = reply.get("job_id", "?")
        print(f"watching {args.camera} for “{args.condition}” (job {job_id})")
        print(f"cancel with: lookout watch cancel {job_id}", file=sys.stderr)
    elif args.action == "cancel":
        print(f"cancelled watch {args.job_id}")
    else:
        rows = [
            [j.job_id, j.user or "", j.camera or "", j.status, j.condition or ""]
            for j in parse_jobs(reply)
        ]
        if not rows:
            print("no watches")
        else:
            print_table(["JOB", "USER", "CAMERA", "STATUS", "CONDITION"], rows)
    return 0


# -- tools -----------------------------------------------------------------------------


def _tools(settings: Settings, args: argparse.Namespace) -> int:
    return _run_tool(settings, args) if args.run else _list_tools(settings, args)


def _run_tool(settings: Settings, args: argparse.Namespace) -> int:
    try:
        arguments = json.loads(args.args)
    except ValueError as exc:
        print(f"lookout: --args is not JSON: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not isinstance(arguments, dict):
        print("lookout: --args must be a JSON object", file=sys.stderr)
        return EXIT_USAGE
    reply = _request(settings, args, "tool", {"tool_name": args.run, "arguments": arguments})
    if (code := _failed(reply, args)) is not None:
        return code
    print(json.dumps(reply.get("result"), indent=2, ensure_ascii=False))
    return 0


def _list_tools(settings: Settings, args: argparse.Namespace) -> int:
    topic = f"{settings.mqtt.topic_prefix}/tools"
    raw = asyncio.run(read_retained(settings, topic, timeout=args.timeout))
    if raw is None:
        print(f"lookout: nothing on {topic}; is lookout running there?", file=sys.stderr)
        return EXIT_FAILED
    document = json.loads(raw)
    if args.json:
        print(json.dumps(document, indent=2, ensure_ascii=False))
        return 0
    rows = []
    for tool in document.get("tools", []):
        fn = tool.get("function", tool)
        params = fn.get("parameters", {})
        required = set(params.get("required", []))
        names = [f"{p}*" if p in required else p for p in params.get("properties", {})]
        rows.append([fn.get("name", "?"), ", ".join(names), _first_sentence(fn.get("description"))])
    print_table(["TOOL", "ARGUMENTS (* required)", "WHAT IT DOES"], rows)
    return 0


def _first_sentence(text: Any) -> str:
    flat = " ".join(str(text or "").split())
    # A sentence ends where a capital letter follows: "e.g. 'away'" does not end one.
    return _SENTENCE_END.split(flat, maxsplit=1)[0]


# -- events ----------------------------------------------------------------------------


def _events(settings: Settings, args: argparse.Namespace) -> int:
    arguments: dict[str, Any] = {"limit": max(1, min(100, args.limit))}
    if args.camera:
        arguments["camera"] = args.camera
    if args.label:
        arguments["label"] = args.label
    reply = _request(
        settings, args, "tool", {"tool_name": "search_objects", "arguments": arguments}
    )
    if (code := _failed(reply, args)) is not None:
        return code
    result = reply.get("result") or {}
    objects = result.get("objects") or []
    if not objects:
        print("no events")
        return 0
    rows = [
        [
            str(o.get("start_local", "")),
            str(o.get("camera", "")),
            str(o.get("label", "")),
            str(o.get("sub_label") or o.get("face") or o.get("plate") or ""),
            ", ".join(o.get("zones") or []),
            "" if o.get("score") is None else f"{o['score']:.2f}",
            str(o.get("end_local", "")),
            summarize(o.get("description") or "", 60),
        ]
        for o in objects
    ]
    print_table(["START", "CAMERA", "LABEL", "NAME", "ZONES", "SCORE", "END", "DESCRIPTION"], rows)
    more = " (more available: raise --limit)" if result.get("more_available") else ""
    print(f"{len(objects)} events{more}", file=sys.stderr)
    return 0

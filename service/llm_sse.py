"""Reading a chat-completions SSE body into plain dicts, as the SDK would read it.

Building the SDK's pydantic model for every chunk cost about half the CPU of a streamed
token; ``json.loads`` on the raw lines does the same job. Failures are raised as the
SDK's own exceptions so :mod:`service.llm_classify` classifies them unchanged.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

_DRAIN_S = 0.1
"""How long the tail after ``[DONE]`` may take before the connection is dropped instead."""


async def sse_chunks(response: Any) -> AsyncGenerator[Any, None]:
    """The JSON payloads of a chat-completions SSE stream, as the SDK would read them.

    Events are split on blank lines, their ``data:`` lines joined with newlines;
    comments and other fields are skipped, ``[DONE]`` ends the stream and an event
    left unterminated at the end of the body is dropped. Transport failures and
    ``{"error": ...}`` events raise the SDK's own exceptions, so they are classified
    exactly as before.

    Raises:
        openai.APITimeoutError: A read timed out.
        openai.APIConnectionError: The connection failed or was dropped mid-body.
        openai.APIError: The stream carried an ``{"error": ...}`` event.
        json.JSONDecodeError: An event was not JSON.
    """
    import ssl  # noqa: PLC0415  (lazy, like everything on the request path)

    import anyio  # noqa: PLC0415
    import httpx2  # noqa: PLC0415
    import openai  # noqa: PLC0415

    request = response.http_request
    data: list[str] = []
    try:
        async with aclosing(response.iter_lines()) as lines:
            async for line in lines:
                if line:
                    if line.startswith("data:"):
                        value = line[5:]
                        data.append(value[1:] if value.startswith(" ") else value)
                    elif line == "data":
                        data.append("")
                    continue
                if not data:
                    continue
                payload = data[0] if len(data) == 1 else "\n".join(data)
                data = []
                if payload.startswith("[DONE]"):
                    await _drain(lines)
                    return
                chunk = json.loads(payload)
                if isinstance(chunk, dict) and chunk.get("error"):
                    raise _stream_error(chunk["error"], request)
                yield chunk
    except httpx2.TimeoutException as exc:
        raise openai.APITimeoutError(request=request) from exc
    except (httpx2.RequestError, ssl.SSLError, anyio.EndOfStream) as exc:
        raise openai.APIConnectionError(request=request) from exc


def _stream_error(error: Any, request: Any) -> Exception:
    """The SDK's exception for an ``{"error": ...}`` event, with the SDK's message."""
    import openai  # noqa: PLC0415

    message = error.get("message") if isinstance(error, dict) else None
    if not message or not isinstance(message, str):
        message = "An error occurred during streaming"
    return openai.APIError(message=message, request=request, body=error)


async def _drain(lines: AsyncIterator[str]) -> None:
    """Read what follows ``[DONE]`` (briefly) so HTTP/1.1 can reuse the connection."""
    import httpx2  # noqa: PLC0415

    try:
        async with asyncio.timeout(_DRAIN_S):
            async for _ in lines:
                pass
    except (TimeoutError, httpx2.HTTPError):
        # The answer is complete; a slow or broken tail only costs the connection.
        pass

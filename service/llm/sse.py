"""Reading a chat-completions SSE body into plain dicts, as the SDK would read it.

Building the SDK's pydantic model for every chunk cost about half the CPU of a streamed
token, and its line reader stacks four async generators on the socket; splitting the
body's bytes here and ``json.loads`` on each event does the same job. Failures are
raised as the SDK's own exceptions so :mod:`service.llm.classify` classifies them
unchanged.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx2

DONE = "[DONE]"
"""Yielded once when the stream ends with ``data: [DONE]`` (not when the body just stops)."""

_DRAIN_S = 0.1
"""How long the tail after ``[DONE]`` may take before the connection is dropped instead."""


async def sse_chunks(response: httpx2.Response) -> AsyncGenerator[Any, None]:
    """The JSON payloads of a chat-completions SSE stream, as the SDK would read them.

    Lines end in LF, CRLF or CR; events are split on blank lines, their ``data:``
    lines joined with newlines; comments and other fields are skipped, ``[DONE]`` ends
    the stream (yielded as :data:`DONE`, so a caller can tell a finished stream from a
    cut one) and an event left unterminated at the end of the body is dropped.
    Transport failures and ``{"error": ...}`` events raise the SDK's own exceptions, so
    they are classified exactly as before.

    Raises:
        openai.APITimeoutError: A read timed out.
        openai.APIConnectionError: The connection failed or was dropped mid-body.
        openai.APIError: The stream carried an ``{"error": ...}`` event.
        json.JSONDecodeError: An event was not JSON.
    """
    request = response.request
    data: list[bytes] = []
    try:
        async with aclosing(_lines(response.aiter_bytes())) as lines:
            async for line in lines:
                if line:
                    if line.startswith(b"data:"):
                        value = line[5:]
                        data.append(value[1:] if value.startswith(b" ") else value)
                    elif line == b"data":
                        data.append(b"")
                    continue
                if not data:
                    continue
                payload = data[0] if len(data) == 1 else b"\n".join(data)
                data = []
                if payload.startswith(b"[DONE]"):
                    yield DONE
                    await _drain(lines)
                    return
                chunk = json.loads(payload)
                if isinstance(chunk, dict) and chunk.get("error"):
                    raise _stream_error(chunk["error"], request)
                yield chunk
    except Exception as exc:
        mapped = _sdk_error(exc, request)
        if mapped is None:
            raise
        raise mapped from exc


async def _lines(body: AsyncIterator[bytes]) -> AsyncGenerator[bytes, None]:
    """The lines of a byte stream, without their terminators.

    A last unterminated line is dropped (an SSE event needs its blank line anyway).
    """
    pending = b""
    skip_lf = False  # the previous read ended in CR: a leading LF completes that CRLF
    async for chunk in body:
        data = chunk[1:] if skip_lf and chunk.startswith(b"\n") else chunk
        data = pending + data if pending else data
        skip_lf = False
        if b"\r" in data:
            skip_lf = data.endswith(b"\r")
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *complete, pending = data.split(b"\n")
        for line in complete:
            yield line


def _sdk_error(exc: Exception, request: httpx2.Request) -> Exception | None:
    """The SDK exception for a transport failure while reading; ``None`` for others.

    The aiohttp transport maps its errors to httpx2's, but a server closing mid-body
    arrives as ``ConnectTimeout`` (its table maps every connection error so); the
    original under ``__cause__`` decides.
    """
    import ssl  # noqa: PLC0415

    import aiohttp  # noqa: PLC0415
    import anyio  # noqa: PLC0415
    import httpx2  # noqa: PLC0415
    import openai  # noqa: PLC0415

    cause = exc.__cause__ if isinstance(exc, httpx2.HTTPError) else None
    if isinstance(cause, aiohttp.ClientError) and not isinstance(cause, aiohttp.ServerTimeoutError):
        return openai.APIConnectionError(request=request)
    if isinstance(exc, httpx2.TimeoutException | aiohttp.ServerTimeoutError):
        return openai.APITimeoutError(request=request)
    broken = httpx2.RequestError | ssl.SSLError | anyio.EndOfStream | aiohttp.ClientError
    if isinstance(exc, broken):
        return openai.APIConnectionError(request=request)
    return None


def _stream_error(error: Any, request: httpx2.Request) -> Exception:
    """The SDK's exception for an ``{"error": ...}`` event, with the SDK's message."""
    import openai  # noqa: PLC0415

    message = error.get("message") if isinstance(error, dict) else None
    if not message or not isinstance(message, str):
        message = "An error occurred during streaming"
    return openai.APIError(message=message, request=request, body=error)


async def _drain(lines: AsyncIterator[bytes]) -> None:
    """Read what follows ``[DONE]`` (briefly) so HTTP/1.1 can reuse the connection."""
    import aiohttp  # noqa: PLC0415
    import httpx2  # noqa: PLC0415

    try:
        async with asyncio.timeout(_DRAIN_S):
            async for _ in lines:
                pass
    except (TimeoutError, OSError, httpx2.HTTPError, aiohttp.ClientError):
        # The answer is complete; a slow or broken tail only costs the connection.
        pass

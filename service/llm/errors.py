"""LLM error codes, and turning SDK/transport exceptions into them.

Kept apart from :mod:`service.llm.roles` so callers (the chat loop, the watch engine, the
MQTT reply builders) can use the codes without importing the ``openai`` package, which
costs about half a second.
"""

from __future__ import annotations

import email.utils
import json
import random
import re
import time
from enum import StrEnum
from typing import Any


class LlmErrorCode(StrEnum):
    """Why a turn failed; the value is what replies carry on the wire."""

    UNAVAILABLE = "llm_unavailable"
    """Connection refused, DNS, TLS, 5xx/429 after our retries, or an empty stream."""
    AUTH = "llm_auth"
    """401/403: the key or the endpoint's permissions are wrong. Never retried."""
    TIMEOUT = "llm_timeout"
    """No connection in time, silence between chunks too long, or the turn deadline passed."""
    CONTEXT_OVERFLOW = "llm_context_overflow"
    """The prompt does not fit the model's context window."""
    ERROR = "llm_error"
    """Anything else: other 4xx, a malformed or truncated stream, an error event in the stream."""
    NO_IMAGES = "llm_no_images"
    """The model (or the server as started) cannot take images: a capability, not an outage."""


class LlmError(Exception):
    """A failed LLM turn, safe to show to a user.

    Attributes:
        code: The classification.
        message: A short human sentence with no secrets and no stack.
        retryable: Whether sending the same request again later may succeed.
        status: The HTTP status when the server answered with one.
        stale_connection: The request failed on a pooled connection the server had
            closed (llama.cpp closes it after every stream although it says keep-alive);
            one immediate resend on a new connection is not a retry.
    """

    def __init__(
        self,
        code: LlmErrorCode,
        message: str,
        *,
        retryable: bool = False,
        status: int | None = None,
        stale_connection: bool = False,
    ) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message
        self.retryable = retryable
        self.status = status
        self.stale_connection = stale_connection
        """The request died on a kept-alive connection the server had already closed."""


# Phrasings of "this model cannot take images", lower-cased: llama.cpp without --mmproj
# (HTTP 500 "image input is not supported - hint: ... mmproj"), vLLM and LM Studio on a
# text-only model, Ollama ("does not support images"), OpenAI ("image_url is only
# supported by certain models"), and proxies that pass these on.
_NO_IMAGES = re.compile(
    "|".join(
        [
            r"image input is not supported",
            r"(does not|doesn'?t|do not|cannot|can'?t) (support|accept|take|handle) "
            r"(image|vision|multimodal)",
            r"images? (input )?(is|are) not supported",
            r"image_url is only supported",
            r"not a multimodal model",
            r"multimodal (input )?(is )?not supported",
            r"vision (is )?not (supported|enabled)",
            r"no vision (support|capab)",
            r"provide the mmproj",
        ]
    )
)


def is_image_rejection(text: str) -> bool:
    """Whether an error text says the model or server cannot take images."""
    return bool(_NO_IMAGES.search(text.lower()))


# Phrasings of "the prompt is too long", lower-cased, from OpenAI/Azure
# ("maximum context length", code context_length_exceeded), vLLM ("maximum context
# length", "is too long to fit into the model", "longer than the maximum model length"),
# llama.cpp ("exceeds the available context size", type exceed_context_size_error),
# Ollama ("exceeded max context length"), Gemini ("input token count ... exceeds the
# maximum number of tokens"), Mistral/Groq/LM Studio and proxies.
_OVERFLOW = re.compile(
    "|".join(
        [
            r"context[_ ]length[_ ]exceeded",
            r"exceed_context_size",
            r"context_window_exceeded",
            r"maximum context length",
            r"max(imum)? context (length|size|window)",
            r"context (length|size|window) (is |was )?(exceeded|too small)",
            r"exceeds? (the )?(available |model'?s? )?context",
            r"exceeded max context",
            r"exceeds the context window",
            r"too many tokens",
            r"prompt is too long",
            r"too long to fit",
            r"longer than the maximum model length",
            r"maximum model length",
            r"input token count .* exceeds",
            r"exceeds the maximum number of tokens",
            r"reduce the length of the messages",
            r"prompt .*tokens.* too (long|large)",
            r"input is too (long|large)",
        ]
    )
)

RETRY_AFTER_CAP_S = 30.0
"""A server asking for a longer pause than this is treated as unavailable now."""


def is_context_overflow(text: str) -> bool:
    """Whether an error text speaks of the context window being exceeded."""
    return bool(_OVERFLOW.search(text.lower()))


def error_text(body: Any, fallback: str = "") -> str:  # noqa: PLR0911  (one per body shape)
    """The human message inside an error body of any common shape, else compact JSON."""
    candidates: list[Any] = [body]
    if isinstance(body, list) and body:
        candidates = [body[0]]
    for item in candidates:
        if isinstance(item, dict):
            inner = item.get("error", item)
            if isinstance(inner, dict) and isinstance(inner.get("message"), str):
                return str(inner["message"])
            if isinstance(inner, str):
                return inner
            if isinstance(item.get("message"), str):
                return str(item["message"])
            if isinstance(item.get("detail"), str):
                return str(item["detail"])
    if isinstance(body, str) and body:
        return body
    if body is None:
        return fallback
    try:
        return json.dumps(body)[:500]
    except (TypeError, ValueError):
        return fallback


def error_code_field(body: Any) -> str:
    """The ``code``/``type`` fields of an error body, lower-cased, for matching."""
    if isinstance(body, list) and body:
        body = body[0]
    if not isinstance(body, dict):
        return ""
    inner = body.get("error", body)
    if not isinstance(inner, dict):
        return ""
    return (
        f"{inner.get('code') or ''} {inner.get('type') or ''} {inner.get('status') or ''}".lower()
    )


def shorten(text: str, limit: int = 300) -> str:
    """One line of at most ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms``/``retry-after`` (seconds or an HTTP date)."""
    if headers is None:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, parsed.timestamp() - time.time())


def backoff_delay(attempt: int, *, base_s: float = 0.5, cap_s: float = 8.0) -> float:
    """Full-jitter exponential backoff for retry number ``attempt`` (1-based)."""
    ceiling = min(cap_s, base_s * (2 ** (attempt - 1)))
    return random.uniform(ceiling / 2, ceiling)


class StreamEndedEarlyError(Exception):
    """The body ended without a finish reason (a proxy or server cut it short)."""

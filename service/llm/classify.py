"""Map what the ``openai`` SDK and the transport raise onto :class:`LlmError` codes.

Only called after a request was attempted, so ``openai`` is already imported and the
import below is free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from service.llm.errors import (
    LlmError,
    LlmErrorCode,
    StreamEndedEarlyError,
    error_code_field,
    error_text,
    is_context_overflow,
    is_image_rejection,
    shorten,
)

if TYPE_CHECKING:
    from service.llm.endpoint import Endpoint
    from service.settings import ProviderSettings

_RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


def _scrub(text: str, secret: str | None) -> str:
    if secret and len(secret) >= 4:
        text = text.replace(secret, "***")
    return shorten(text)


def model_hint(provider: Endpoint) -> str:
    """What to change when a model cannot take images."""
    return (
        f"model {provider.model!r} has no vision, or the server was started without its "
        "vision projector; use a vision model for the vision role or set supports_vision: false"
    )


def _status_error(  # noqa: PLR0911  (one return per kind of HTTP status reads best)
    status: int, body: Any, server_text: str, provider: Endpoint
) -> LlmError:
    where = f"provider {provider.name!r}"
    codes = error_code_field(body)
    if is_image_rejection(server_text):
        # Whatever the status (llama.cpp says 500): a capability answer, never retried.
        return LlmError(
            LlmErrorCode.NO_IMAGES,
            f"{where} cannot take images ({model_hint(provider)}): {server_text}",
            status=status,
        )
    if status in (401, 403):
        # The server's text may echo part of the key; say only what the operator needs.
        return LlmError(
            LlmErrorCode.AUTH,
            f"{where} rejected the credentials (HTTP {status}); check api_key",
            status=status,
        )
    if status != 429 and (is_context_overflow(server_text) or is_context_overflow(codes)):
        return LlmError(
            LlmErrorCode.CONTEXT_OVERFLOW,
            f"the conversation does not fit the model's context window: {server_text}",
            status=status,
        )
    if status == 429:
        if "insufficient_quota" in codes or "insufficient_quota" in server_text.lower():
            return LlmError(
                LlmErrorCode.UNAVAILABLE, f"{where} has no quota left: {server_text}", status=status
            )
        return LlmError(
            LlmErrorCode.UNAVAILABLE,
            f"{where} is rate limiting: {server_text}",
            retryable=True,
            status=status,
        )
    if status >= 500 or status in _RETRYABLE_STATUS:
        return LlmError(
            LlmErrorCode.UNAVAILABLE,
            f"{where} failed with HTTP {status}: {server_text}",
            retryable=True,
            status=status,
        )
    if status == 404:
        return LlmError(
            LlmErrorCode.ERROR,
            f"{where} answered 404 (wrong base_url or unknown model {provider.model!r}): "
            f"{server_text}",
            status=status,
        )
    return LlmError(
        LlmErrorCode.ERROR,
        f"{where} refused the request (HTTP {status}): {server_text}",
        status=status,
    )


@dataclass(frozen=True)
class _Context:
    provider: Endpoint
    deadline_s: float | None
    started: bool

    @property
    def where(self) -> str:
        return f"provider {self.provider.name!r}"

    def scrub(self, text: str) -> str:
        key = self.provider.settings.api_key
        return _scrub(text, key.get_secret_value() if key is not None else None)


def _deadline(exc: BaseException, ctx: _Context) -> LlmError | None:
    if not isinstance(exc, TimeoutError):
        return None
    limit = f" of {ctx.deadline_s:g} s" if ctx.deadline_s is not None else ""
    return LlmError(LlmErrorCode.TIMEOUT, f"the turn deadline{limit} passed", retryable=True)


def _transport(exc: BaseException, ctx: _Context) -> LlmError | None:
    import openai  # noqa: PLC0415  (already loaded by the request that failed)

    s = ctx.provider.settings
    if isinstance(exc, openai.APITimeoutError) and not _misfiled_connection_error(exc, s):
        if type(exc.__cause__).__name__ == "ConnectTimeout":
            text = f"{ctx.where} did not accept a connection within {s.connect_timeout_s:g} s"
        elif ctx.started:
            text = f"{ctx.where} went silent for {s.timeout_s:g} s mid-answer"
        else:
            text = f"{ctx.where} sent nothing for {s.timeout_s:g} s"
        return LlmError(LlmErrorCode.TIMEOUT, text, retryable=True)
    if not isinstance(exc, openai.APIConnectionError):
        return None
    cause = ctx.scrub(str(exc.__cause__ or exc))
    if ctx.started:
        text = f"{ctx.where} broke off the stream mid-answer ({cause})"
        return LlmError(LlmErrorCode.ERROR, text, retryable=True)
    return LlmError(
        LlmErrorCode.UNAVAILABLE,
        f"cannot reach {ctx.where} ({cause})",
        retryable=True,
        stale_connection=_stale(exc),
    )


_STALE = ("server disconnected", "can not write request body", "connection reset by peer")
"""What a request on a pooled connection the server has closed dies of (aiohttp, httpx)."""


def _stale(exc: BaseException) -> bool:
    cause: BaseException | None = exc
    while cause is not None:
        if type(cause).__name__ in ("ServerDisconnectedError", "RemoteProtocolError"):
            return True
        if any(marker in str(cause).lower() for marker in _STALE):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _misfiled_connection_error(exc: BaseException, settings: ProviderSettings) -> bool:
    """Whether a "timeout" is really a refused or dropped connection.

    The SDK's aiohttp transport files every aiohttp connection error under httpx2's
    ``ConnectTimeout`` (a refused connection included); the aiohttp error at the
    bottom of the chain says what happened.
    """
    if settings.http_client != "aiohttp":
        return False
    import aiohttp  # noqa: PLC0415  (loaded by the transport already)

    cause = exc.__cause__
    while cause is not None and not isinstance(cause, aiohttp.ClientError):
        cause = cause.__cause__
    return cause is not None and not isinstance(cause, TimeoutError)


def _http_status(exc: BaseException, ctx: _Context) -> LlmError | None:
    import openai  # noqa: PLC0415

    if not isinstance(exc, openai.APIStatusError):
        return None
    text = ctx.scrub(error_text(exc.body, exc.message))
    return _status_error(exc.status_code, exc.body, text, ctx.provider)


def _stream_event(exc: BaseException, ctx: _Context) -> LlmError | None:
    """An ``{"error": ...}`` object inside the SSE stream: no HTTP status to go by."""
    import openai  # noqa: PLC0415

    if not isinstance(exc, openai.APIError) or isinstance(exc, openai.APIStatusError):
        return None
    text = ctx.scrub(error_text(exc.body, exc.message) or exc.message)
    code = error_code_field(exc.body)
    if is_image_rejection(text):
        return LlmError(
            LlmErrorCode.NO_IMAGES,
            f"{ctx.where} cannot take images ({model_hint(ctx.provider)}): {text}",
        )
    if is_context_overflow(text) or is_context_overflow(code):
        return LlmError(
            LlmErrorCode.CONTEXT_OVERFLOW,
            f"the conversation does not fit the model's context window: {text}",
        )
    numeric = next((int(tok) for tok in code.split() if tok.isdigit()), None)
    if numeric in (401, 403):
        return LlmError(LlmErrorCode.AUTH, f"{ctx.where} rejected the credentials", status=numeric)
    if numeric is not None and (numeric >= 500 or numeric == 429):
        text = f"{ctx.where} reported an error: {text}"
        return LlmError(LlmErrorCode.UNAVAILABLE, text, retryable=True, status=numeric)
    return LlmError(LlmErrorCode.ERROR, f"{ctx.where} reported an error in the stream: {text}")


def _cut_short(exc: BaseException, ctx: _Context) -> LlmError | None:
    if not isinstance(exc, StreamEndedEarlyError):
        return None
    if ctx.started:
        text = f"{ctx.where} ended the stream before the answer was finished"
        return LlmError(LlmErrorCode.ERROR, text, retryable=True)
    return LlmError(LlmErrorCode.UNAVAILABLE, f"{ctx.where} sent an empty answer", retryable=True)


def _malformed(exc: BaseException, ctx: _Context) -> LlmError | None:
    import openai  # noqa: PLC0415

    # json.JSONDecodeError (a chunk that is not JSON) and pydantic errors are ValueErrors.
    if not isinstance(exc, ValueError | openai.OpenAIError):
        return None
    detail = ctx.scrub(f"{type(exc).__name__}: {exc}")
    return LlmError(LlmErrorCode.ERROR, f"{ctx.where} sent a malformed stream ({detail})")


_HANDLERS = (_deadline, _transport, _http_status, _stream_event, _cut_short, _malformed)


def classify(
    exc: BaseException, *, provider: Endpoint, deadline_s: float | None, started: bool
) -> LlmError | None:
    """The :class:`LlmError` for ``exc``, or ``None`` for exceptions that are bugs, not LLM trouble.

    Args:
        exc: What the request or the stream raised.
        provider: For names and timeouts in the message.
        deadline_s: The turn deadline, for the message.
        started: Whether part of the answer was already given to the caller.
    """
    if isinstance(exc, LlmError):
        return exc
    ctx = _Context(provider, deadline_s, started)
    for handler in _HANDLERS:
        err = handler(exc, ctx)
        if err is not None:
            return err
    return None


_THINKING_FIELDS = ("chat_template_kwargs", "reasoning_effort", "think")


def _thinking_refused(text: str, provider: Endpoint, body: dict[str, Any]) -> bool:
    """Whether a 400 refused the thinking argument that ``body`` carries.

    OpenAI: "Unsupported parameter: 'reasoning_effort' ...", or the values it takes;
    Gemini: "Unknown name chat_template_kwargs"; Ollama: "... does not support thinking".
    """
    if provider.thinking_rejected:
        return False
    sent = [name for name in _THINKING_FIELDS if name in body]
    if not sent:
        return False
    if "does not support thinking" in text or "only works in thinking mode" in text:
        return True
    return any(name in text for name in sent if name != "think") or (
        "think" in sent and '"think"' in text
    )


def is_capability_rejection(exc: BaseException, provider: Endpoint, body: dict[str, Any]) -> bool:
    """Whether a 400 rejected an optional parameter; if so switch it off on ``provider``.

    Some servers refuse ``stream_options`` (older proxies), the thinking argument
    (OpenAI's models without reasoning, Gemini's unknown fields, Ollama's models without
    thinking) or a ``json_schema`` ``response_format`` (llama.cpp: "Either json_schema or
    grammar"). Each is switched off once, for the provider's lifetime, so the caller
    retries immediately without it.
    """
    import openai  # noqa: PLC0415

    if not isinstance(exc, openai.BadRequestError | openai.UnprocessableEntityError):
        return False
    text = f"{error_text(exc.body, exc.message)} {error_code_field(exc.body)}".lower()
    if is_context_overflow(text):
        return False
    if "stream_options" in text and "stream_options" in body and provider.send_usage_option:
        provider.send_usage_option = False
        return True
    if _thinking_refused(text + " " + str(exc.body).lower(), provider, body):
        provider.thinking_rejected = True
        return True
    rejected_format = any(word in text for word in ("response_format", "json_schema", "grammar"))
    if rejected_format and "response_format" in body and not provider.response_format_rejected:
        provider.response_format_rejected = True
        return True
    return False

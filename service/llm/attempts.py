"""The attempts of one turn: the request body, and what each failure decides.

A failure is classified (:mod:`service.llm.classify`); an optional parameter the server
rejected is switched off and the request resent at once; a server that cannot take
images gets the request without them (when the caller allows); a request that died on a
kept-alive connection the server had closed is resent once; transient failures before
the first token are retried with backoff within ``max_retries`` and the turn deadline.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import structlog

from service.llm.classify import classify, is_capability_rejection
from service.llm.errors import (
    RETRY_AFTER_CAP_S,
    LlmError,
    LlmErrorCode,
    backoff_delay,
    parse_retry_after,
)
from service.llm.images import has_images, no_images_error, without_images

if TYPE_CHECKING:
    from service.llm.endpoint import Endpoint

log = structlog.get_logger(__name__)

POOLED_FOR_S = 30.0
"""How long after a success a connection may still sit in the pool (aiohttp keeps 15 s)."""


class Attempts:
    """The request of one turn and what its failed attempts decide."""

    def __init__(
        self,
        provider: Endpoint,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None,
        enable_thinking: bool | None,
        response_format: dict[str, Any] | None,
        deadline_s: float | None,
        started: float,
        images_optional: bool,
    ) -> None:
        self.provider = provider
        self.messages = messages
        self.images_dropped = False
        self.images_optional = images_optional
        if not images_optional and provider.images_rejected and has_images(messages):
            raise no_images_error(provider)
        if provider.images_rejected and (stripped := without_images(messages)) is not None:
            # Known not to take images: do not pay for a request that must fail.
            self.messages, self.images_dropped = stripped, True
        self._build = functools.partial(
            provider.build_request,
            tools=tools,
            enable_thinking=enable_thinking,
            response_format=response_format,
        )
        self.body = self._build(self.messages)
        self.deadline_s = deadline_s
        self.started = started
        self.deadline = None if deadline_s is None else started + deadline_s
        self.attempts = 0
        self.retries = 0
        self.resent_stale = False

    def after_failure(self, exc: Exception, *, emitted: bool, now: float) -> float:
        """Seconds to wait before the next attempt; raises when there is none.

        Raises:
            LlmError: The classified failure when it is final.
            Exception: ``exc`` itself when it is not an LLM failure (a bug).
        """
        provider = self.provider
        err = classify(exc, provider=provider, deadline_s=self.deadline_s, started=emitted)
        if err is None:
            raise exc
        if not emitted and is_capability_rejection(exc, provider, self.body):
            # The server rejected an optional parameter, now switched off: resend at once.
            log.warning(
                "llm_option_rejected",
                provider=provider.name,
                status=err.status,
                reason=err.message,
            )
            self.body = self._build(self.messages)
            return 0.0
        if err.code is LlmErrorCode.NO_IMAGES and not emitted:
            if not provider.images_rejected:
                provider.images_rejected = True
                log.warning("llm_images_rejected", provider=provider.name, reason=err.message)
            stripped = without_images(self.messages) if self.images_optional else None
            if stripped is not None:
                # A capability answer, not an outage: the turn goes on without the images.
                self.messages, self.images_dropped = stripped, True
                self.body = self._build(self.messages)
                return 0.0
        recent = now - provider.last_success_at < POOLED_FOR_S
        if err.stale_connection and recent and not emitted and not self.resent_stale:
            # Soon after a success the request most likely went out on the kept-alive
            # connection of it, which the server had closed: resend once on a new one.
            self.resent_stale = True
            log.debug("llm_stale_connection_resend", provider=provider.name)
            return 0.0
        delay = _retry_delay(provider, err, exc, self.retries + 1, emitted)
        if delay is None or (self.deadline is not None and now + delay >= self.deadline):
            log.warning(
                "llm_turn_failed",
                provider=provider.name,
                code=err.code.value,
                status=err.status,
                attempts=self.attempts,
                reason=err.message,
            )
            if self.retries and err.code is LlmErrorCode.UNAVAILABLE:
                err = LlmError(
                    err.code,
                    f"{err.message} (after {self.attempts} attempts)",
                    retryable=err.retryable,
                    status=err.status,
                )
            raise err from None
        self.retries += 1
        log.warning(
            "llm_retry",
            provider=provider.name,
            code=err.code.value,
            status=err.status,
            attempt=self.attempts,
            delay_s=round(delay, 3),
        )
        return delay


def _retry_delay(
    provider: Endpoint, err: LlmError, exc: BaseException, retry: int, started: bool
) -> float | None:
    """Seconds to wait before retry number ``retry``, or ``None`` when not to retry."""
    if started or not err.retryable or err.code is LlmErrorCode.TIMEOUT:
        return None
    if retry > provider.settings.max_retries:
        return None

    response = getattr(exc, "response", None)
    wait = parse_retry_after(getattr(response, "headers", None))
    if wait is not None:
        return None if wait > RETRY_AFTER_CAP_S else wait
    return backoff_delay(retry, base_s=provider.retry_base_s, cap_s=provider.retry_cap_s)

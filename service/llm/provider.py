"""One configured OpenAI-compatible endpoint: its SDK client and its request shape.

``import openai`` takes about half a second, so it happens when the first request is
built, not at service start.
"""

from __future__ import annotations

import copy
import gc
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any, Literal

from service.llm.errors import LlmError, LlmErrorCode
from service.llm.events import TurnEnd, TurnEvent
from service.llm.turn import complete, stream_turn
from service.settings import ProviderSettings

if TYPE_CHECKING:
    import httpx2
    from openai import AsyncOpenAI

ServerKind = Literal["openai", "azure", "gemini", "ollama", "llamacpp", "vllm", "lmstudio", "other"]

THINKING_BY_SERVER: dict[str, str] = {
    # OpenAI/Azure: models without reasoning refuse `reasoning_effort` (400), gpt-5 refuses
    # "none" and gpt-5.1 refuses "minimal": sending nothing is the one safe default.
    "openai": "none",
    "azure": "none",
    # Gemini 400s on unknown fields (chat_template_kwargs); "none" works on 2.5 Flash.
    "gemini": "reasoning_effort",
    # Ollama's /v1 ignores `think`; it maps `reasoning_effort` ("none" = off), v0.12.4+.
    "ollama": "reasoning_effort",
    # llama.cpp and vLLM hand chat_template_kwargs to the template (Qwen3, ...); LM
    # Studio and unknown servers ignore or refuse it, and a refusal turns it off.
    "llamacpp": "chat_template_kwargs",
    "vllm": "chat_template_kwargs",
    "lmstudio": "chat_template_kwargs",
    "other": "chat_template_kwargs",
}
"""``thinking_control: auto`` per server (sources: each server's code and docs)."""


def server_kind(settings: ProviderSettings) -> ServerKind:
    """Which server a provider talks to, guessed from its ``kind`` and ``base_url``."""
    from urllib.parse import urlsplit  # noqa: PLC0415

    if settings.kind == "azure":
        return "azure"
    url = urlsplit(settings.base_url or "https://api.openai.com/v1")
    host = (url.hostname or "").lower()
    try:
        port = url.port
    except ValueError:
        port = None
    checks: list[tuple[ServerKind, bool]] = [
        ("openai", host == "api.openai.com"),
        ("azure", host.endswith((".openai.azure.com", ".cognitiveservices.azure.com"))),
        ("gemini", host == "generativelanguage.googleapis.com"),
        ("ollama", port == 11434 or "ollama" in host),
        ("lmstudio", port == 1234 or "lmstudio" in host or "lm-studio" in host),
        ("vllm", "vllm" in host),
        ("llamacpp", "llama" in host or port == 8080),
    ]
    return next((kind for kind, hit in checks if hit), "other")


REASONING_EFFORT_ON = "medium"
"""``reasoning_effort`` sent for ``enable_thinking=True`` unless ``extra_body`` names one."""
REASONING_EFFORT_OFF = "none"
"""``reasoning_effort`` sent for ``enable_thinking=False`` (Gemini 2.5 Flash, GPT-5.1+, Ollama)."""


class Provider:
    """One configured OpenAI-compatible endpoint and its lazily built SDK client.

    Args:
        name: The key under ``llm.providers``.
        settings: Its settings.
        retry_base_s: First backoff step (doubling, full jitter); tests make it small.
        retry_cap_s: Longest backoff step.

    Attributes:
        send_usage_option: Whether ``stream_options.include_usage`` is sent; switched off
            for good the first time the server rejects it.
        response_format_rejected: Set the first time the server rejects a
            ``response_format``; later requests go without one.
        images_rejected: Set the first time the server answers that it cannot take
            images; later requests leave them out and the provider stops seeing.
    """

    def __init__(
        self,
        name: str,
        settings: ProviderSettings,
        *,
        retry_base_s: float = 0.5,
        retry_cap_s: float = 8.0,
    ) -> None:
        self.name = name
        self.settings = settings
        self.retry_base_s = retry_base_s
        self.retry_cap_s = retry_cap_s
        self._client: AsyncOpenAI | None = None
        # Learned from the server's 400s and kept for the provider's lifetime.
        self.send_usage_option = True
        self.response_format_rejected = False
        self.images_rejected = False
        self.think_opened = settings.template_opens_think
        self.server = server_kind(settings)
        self.thinking_rejected = False
        """The server refused the thinking argument once: it is not sent again."""
        """The chat template opens ``<think>`` itself (configured, or learned)."""
        self.last_success_at = float("-inf")
        """Event-loop time of the last turn that ended well (see ``turn.py``)."""

    @property
    def model(self) -> str:
        """The model name sent with every request (Azure: the deployment name)."""
        return self.settings.model

    @property
    def thinking_control(self) -> str:
        """How ``enable_thinking`` is sent now: configured, or picked for the server."""
        if self.thinking_rejected:
            return "none"
        configured = self.settings.thinking_control
        return THINKING_BY_SERVER[self.server] if configured == "auto" else configured

    @property
    def supports_vision(self) -> bool:
        """Whether images may be sent: configured so, and not refused by the server."""
        return self.settings.supports_vision and not self.images_rejected

    def _secret(self) -> str | None:
        key = self.settings.api_key
        return key.get_secret_value() if key is not None else None

    @property
    def client(self) -> AsyncOpenAI:
        """The SDK client, built (and ``openai`` imported) on first use."""
        if self._client is None:
            self._client = self._build_client()
            # Everything alive now (the SDK's and its dependencies' modules, classes and
            # schemas, ~140k objects) lives as long as the process. Leaving it out of the
            # cyclic GC's full collections removed a 60 ms stall that hit a burst of 200
            # chats at random (bench/bench_chat.py).
            gc.freeze()
        return self._client

    def _build_client(self) -> AsyncOpenAI:
        import httpx2  # noqa: PLC0415  (lazy: keeps service start fast)
        import openai  # noqa: PLC0415

        s = self.settings
        timeout = httpx2.Timeout(s.timeout_s, connect=s.connect_timeout_s)
        # Local servers need no key, but the SDK insists on one (and would otherwise
        # read OPENAI_API_KEY from the environment, which is not this provider's).
        api_key = self._secret() or "unused"
        try:
            if s.kind == "azure":
                endpoint, version = _azure_endpoint(s.base_url, s.api_version)
                return openai.AsyncAzureOpenAI(
                    azure_endpoint=endpoint,
                    api_version=version,
                    api_key=api_key,
                    timeout=timeout,
                    max_retries=0,
                    default_headers=dict(s.headers) or None,
                    http_client=self._http_client(timeout),
                )
            return openai.AsyncOpenAI(
                api_key=api_key,
                base_url=s.base_url or "https://api.openai.com/v1",
                timeout=timeout,
                max_retries=0,
                default_headers=dict(s.headers) or None,
                http_client=self._http_client(timeout),
            )
        except openai.OpenAIError as exc:
            raise LlmError(
                LlmErrorCode.ERROR, f"provider {self.name!r} is misconfigured: {exc}"
            ) from None

    def _http_client(self, timeout: httpx2.Timeout) -> httpx2.AsyncClient | None:
        """The SDK's aiohttp transport, or ``None`` for its default httpx2 one.

        Both keep the SDK's connection limits and honour ``HTTPS_PROXY``/``NO_PROXY``.
        aiohttp parses HTTP in C and reads a socket without re-arming it per chunk: with
        200 streams at once it halved the CPU of each request and of each streamed token
        (``bench/bench_chat.py``).
        """
        if self.settings.http_client != "aiohttp":
            return None
        import openai  # noqa: PLC0415

        return openai.DefaultAioHttpClient(timeout=timeout)

    async def open_stream(self, body: dict[str, Any]) -> httpx2.Response:
        """POST a streamed chat completion; the HTTP response, its body not yet read.

        ``client.post`` is the SDK's documented way to send a body as it is. The typed
        ``create()`` would first walk every message and tool through the SDK's TypedDict
        transform: 0.8 ms of CPU per call here, more than the rest of the request, for a
        body that is plain JSON already. Auth, the base URL, Azure's deployment paths,
        timeouts and the ``APIStatusError`` family for HTTP errors are still the SDK's.

        Raises:
            openai.APIError: As the SDK raises them for the request and its status.
        """
        import httpx2  # noqa: PLC0415

        response: httpx2.Response = await self.client.post(
            "/chat/completions", cast_to=httpx2.Response, body=body, stream=True
        )
        return response

    async def aclose(self) -> None:
        """Close the HTTP connections (the client is rebuilt on next use)."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    def build_request(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        enable_thinking: bool | None = None,
        response_format: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The JSON body of one streamed chat-completions request (exposed for tests).

        ``enable_thinking`` is mapped per ``thinking_control``: ``chat_template_kwargs``
        sends ``{"chat_template_kwargs": {"enable_thinking": b}}`` (llama.cpp, vLLM,
        Qwen templates), ``think`` sends ``{"think": b}`` (Ollama), ``reasoning_effort``
        sends ``"none"`` for off and, for on, ``extra_body["reasoning_effort"]`` if
        configured else ``"medium"`` (OpenAI, Gemini), ``none`` sends nothing. ``None``
        leaves the server's default. A ``json_schema`` response format is dropped for
        providers configured (or found) not to support it. The provider's ``extra_body``
        keys are merged in last and win, as the SDK's ``extra_body`` does.
        """
        s = self.settings
        kwargs: dict[str, Any] = {"model": s.model, "messages": messages, "stream": True}
        if self.send_usage_option:
            kwargs["stream_options"] = {"include_usage": True}
        if tools:
            kwargs["tools"] = tools
            kwargs["tool_choice"] = "auto"
        if (
            response_format is not None
            and not self.response_format_rejected
            and (s.json_schema or response_format.get("type") != "json_schema")
        ):
            kwargs["response_format"] = response_format
        extra = copy.deepcopy(s.extra_body)
        control = self.thinking_control
        if enable_thinking is not None:
            if control == "chat_template_kwargs":
                template_kwargs = dict(extra.get("chat_template_kwargs") or {})
                template_kwargs["enable_thinking"] = enable_thinking
                extra["chat_template_kwargs"] = template_kwargs
            elif control == "think":
                extra["think"] = enable_thinking
            elif control == "reasoning_effort":
                configured = extra.get("reasoning_effort")
                on = configured if isinstance(configured, str) and configured != "none" else None
                extra["reasoning_effort"] = (
                    (on or REASONING_EFFORT_ON) if enable_thinking else REASONING_EFFORT_OFF
                )
        kwargs.update(extra)
        return kwargs

    def stream_turn(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        enable_thinking: bool | None = None,
        response_format: dict[str, Any] | None = None,
        deadline_s: float | None = None,
        images_optional: bool = False,
    ) -> AsyncGenerator[TurnEvent, None]:
        """Same as :func:`stream_turn` with this provider."""
        return stream_turn(
            self,
            messages,
            tools=tools,
            enable_thinking=enable_thinking,
            response_format=response_format,
            deadline_s=deadline_s,
            images_optional=images_optional,
        )

    async def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        enable_thinking: bool | None = None,
        response_format: dict[str, Any] | None = None,
        deadline_s: float | None = None,
    ) -> TurnEnd:
        """Same as :func:`complete` with this provider."""
        return await complete(
            self,
            messages,
            tools=tools,
            enable_thinking=enable_thinking,
            response_format=response_format,
            deadline_s=deadline_s,
        )


def _azure_endpoint(base_url: str | None, api_version: str | None) -> tuple[str, str]:
    """Split ``https://x.openai.azure.com/?api-version=V`` the way Frigate's config spells it."""
    from urllib.parse import parse_qs, urlsplit  # noqa: PLC0415

    if not base_url:
        raise LlmError(
            LlmErrorCode.ERROR, "an azure provider needs base_url (the resource endpoint)"
        )
    parts = urlsplit(base_url)
    from_query = parse_qs(parts.query).get("api-version") or [""]
    version = api_version or from_query[0]
    if not version:
        raise LlmError(LlmErrorCode.ERROR, "an azure provider needs api_version")
    return f"{parts.scheme}://{parts.netloc}{parts.path}".rstrip("/") + "/", version

"""What one turn needs of a provider, so the turn code does not import the provider.

:class:`~service.llm.provider.Provider` satisfies :class:`Endpoint` and offers the turn
functions as methods; the turn and the error classifier depend only on this protocol,
which keeps the import graph of the LLM layer free of cycles.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import httpx2
    from openai import AsyncOpenAI

    from service.settings import ProviderSettings


class Endpoint(Protocol):
    """One OpenAI-compatible endpoint as a turn sees it: settings, client, learned flags."""

    name: str
    settings: ProviderSettings
    retry_base_s: float
    retry_cap_s: float
    send_usage_option: bool
    response_format_rejected: bool
    images_rejected: bool
    last_success_at: float
    think_opened: bool
    thinking_rejected: bool

    @property
    def model(self) -> str:
        """The model name sent with every request."""

    @property
    def client(self) -> AsyncOpenAI:
        """The SDK client."""

    def build_request(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        enable_thinking: bool | None = None,
        response_format: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The JSON body of one streamed chat-completions request."""

    async def open_stream(self, body: dict[str, Any]) -> httpx2.Response:
        """POST a streamed chat completion; the response, its body not yet read."""

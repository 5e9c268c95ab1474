"""Providers by role, and image descriptions for a chat model that cannot see.

:class:`Providers` picks the provider for each role and, when chat and vision are
different models, lets the vision model put a camera frame into words for the chat model.
"""

from __future__ import annotations

from typing import Any

import structlog

from service.llm.errors import LlmError, LlmErrorCode
from service.llm.images import no_images_error
from service.llm.provider import Provider
from service.llm.turn import complete
from service.settings import LlmSettings

log = structlog.get_logger(__name__)

DESCRIBE_SYSTEM_PROMPT = (
    "You are the eyes of a home-security assistant that cannot see images itself. "
    "You get one still frame from a security camera and the list of objects the camera's "
    "detector is tracking right now. Describe what is actually visible: people, vehicles, "
    "animals and packages, where they are in the scene, what they are doing, and details "
    "that matter for security or for the question, such as clothing and colours, whether "
    "doors, gates or garage doors are open, lights, weather and time of day. If the "
    "detector lists something you cannot see, or you see something it does not list, say "
    "so. Do not guess who a person is. If something is unclear, say it is unclear. Answer "
    "in plain text, at most 150 words, with no preamble."
)


def _describe_messages(
    data_url: str, context_text: str, question: str | None
) -> list[dict[str, Any]]:
    ask = "Describe this frame."
    if question:
        ask = f"Describe this frame, paying attention to this question from the user: {question}"
    context = context_text.strip() or "(the detector is tracking nothing right now)"
    return [
        {"role": "system", "content": DESCRIBE_SYSTEM_PROMPT},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": f"Camera context:\n{context}\n\n{ask}"},
                {"type": "image_url", "image_url": {"url": data_url}},
            ],
        },
    ]


class Providers:
    """The configured providers, by name and by role.

    Args:
        settings: The ``llm`` section.
        retry_base_s: Passed to every :class:`Provider` (tests make backoff short).

    Attributes:
        by_name: Every provider, by its key under ``llm.providers``.
        chat: The provider holding the ``chat`` role, if any.
    """

    def __init__(self, settings: LlmSettings, *, retry_base_s: float = 0.5) -> None:
        self.by_name = {
            name: Provider(name, cfg, retry_base_s=retry_base_s)
            for name, cfg in settings.providers.items()
        }
        self.chat = next((p for p in self.by_name.values() if "chat" in p.settings.roles), None)
        # `supports_vision: false` means no images: such a provider never holds the role.
        self._vision = next(
            (
                p
                for p in self.by_name.values()
                if "vision" in p.settings.roles and p.settings.supports_vision
            ),
            None,
        )
        if self._vision is None and self.chat is not None and self.chat.settings.supports_vision:
            self._vision = self.chat

    @property
    def vision(self) -> Provider | None:
        """The provider that looks at images, or ``None``.

        The ``vision`` role's holder, else a seeing chat provider; ``None`` when there is
        none, or when its server said it cannot take images.
        """
        if self._vision is None or not self._vision.supports_vision:
            return None
        return self._vision

    @property
    def same_for_chat_and_vision(self) -> bool:
        """Whether the chat model sees images itself (else :meth:`describe_image` gives it text)."""
        return self.chat is not None and self.chat is self.vision and self.chat.supports_vision

    def vision_problem(self) -> str | None:
        """Why no image can be shown to a model right now, in words; ``None`` if one can."""
        if self._vision is not None and self._vision.images_rejected:
            return (
                f"provider {self._vision.name!r} cannot take images (its server said so); "
                "the answer is made without the camera image"
            )
        if self.vision is None:
            return "no vision model is configured"
        return None

    def require_chat(self) -> Provider:
        """The chat provider.

        Raises:
            LlmError: ``llm_unavailable`` when no provider has the chat role.
        """
        if self.chat is None:
            raise LlmError(
                LlmErrorCode.UNAVAILABLE, "no LLM provider is configured with the chat role"
            )
        return self.chat

    def require_vision(self) -> Provider:
        """The vision provider.

        Raises:
            LlmError: ``llm_unavailable`` when no provider can look at images.
        """
        if self._vision is not None and self._vision.images_rejected:
            raise no_images_error(self._vision)
        if self.vision is None:
            raise LlmError(
                LlmErrorCode.UNAVAILABLE, "no LLM provider is configured to look at images"
            )
        return self.vision

    async def describe_image(
        self,
        data_url: str,
        context_text: str,
        *,
        question: str | None = None,
        deadline_s: float | None = None,
    ) -> str:
        """Have the vision model describe a frame, for a chat model that cannot see it.

        Args:
            data_url: The frame as ``data:image/jpeg;base64,…``.
            context_text: What the detector tracks on that camera right now (labels,
                zones, since when), one item per line.
            question: The user's question, so the description covers what matters.
            deadline_s: Bound on the whole call.

        Returns:
            The description, stripped.

        Raises:
            LlmError: As :func:`stream_turn`, or ``llm_error`` for an empty answer.
        """
        provider = self.require_vision()
        end = await complete(
            provider,
            _describe_messages(data_url, context_text, question),
            enable_thinking=False,
            deadline_s=deadline_s,
        )
        text = end.content.strip()
        if not text:
            raise LlmError(
                LlmErrorCode.ERROR, f"vision provider {provider.name!r} returned no description"
            )
        log.debug(
            "image_described",
            provider=provider.name,
            chars=len(text),
            total_ms=round(end.total_ms, 1),
        )
        return text

    async def aclose(self) -> None:
        """Close every provider's HTTP connections."""
        for provider in self.by_name.values():
            await provider.aclose()

"""Images in a request, for a server that cannot take them.

A chat goes on without the image (each image part becomes a short note the model
reads); a watch, which must see, fails with ``llm_no_images`` instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from service.llm.errors import LlmError, LlmErrorCode

if TYPE_CHECKING:
    from service.llm.endpoint import Endpoint

IMAGE_LEFT_OUT = "[The image is not shown: the model cannot take images.]"


def has_images(messages: list[dict[str, Any]]) -> bool:
    """Whether any message carries an image part."""
    return without_images(messages) is not None


def no_images_error(provider: Endpoint) -> LlmError:
    """The error for a provider whose server said it cannot take images."""
    return LlmError(
        LlmErrorCode.NO_IMAGES,
        f"provider {provider.name!r} cannot take images (its server said so): model "
        f"{provider.model!r} has no vision, or the server was started without its vision "
        "projector",
    )


def without_images(messages: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """``messages`` with every image part replaced by a note, or ``None`` if there were none."""
    out: list[dict[str, Any]] = []
    found = False
    for message in messages:
        content = message.get("content")
        if isinstance(content, list) and any(
            isinstance(p, dict) and p.get("type") in ("image_url", "input_image") for p in content
        ):
            found = True
            parts = [
                {"type": "text", "text": IMAGE_LEFT_OUT}
                if isinstance(p, dict) and p.get("type") in ("image_url", "input_image")
                else p
                for p in content
            ]
            out.append({**message, "content": parts})
        else:
            out.append(message)
    return out if found else None

"""lookout's error replies in words a person understands (what Assist says)."""

from __future__ import annotations

from .client import LookoutError

_SENTENCES = {
    "llm_unavailable": "lookout's language model cannot be reached right now.",
    "llm_auth": "lookout's language model refused lookout's credentials.",
    "llm_timeout": "lookout's language model took too long to answer.",
    "llm_context_overflow": "This conversation has grown too long for lookout's model; "
    "start a new one.",
    "llm_no_images": "lookout's language model cannot look at camera images.",
    "llm_error": "lookout's language model failed.",
    "forbidden": "lookout does not allow that for the lookout user {user}.",
    "not_found": "lookout does not know that.",
    "overloaded": "lookout is busy; try again in a moment.",
    "rate_limited": "lookout was asked too often; try again in a minute.",
    "timeout": "lookout ran out of time for this question.",
    "cancelled": "The question was cancelled.",
    "shutting_down": "lookout stopped before it could answer.",
    "unavailable": "lookout cannot answer right now: something it needs is unavailable.",
    "invalid_request": "lookout could not take the question.",
}
_OWN = frozenset({"offline", "no_answer", "mqtt"})
"""The integration's own codes, whose message is already a sentence."""


def describe_error(error: LookoutError, user: str) -> str:
    """A sentence for lookout's error code, then lookout's own message in brackets."""
    if error.code in _OWN:
        return f"{error.message}."
    sentence = _SENTENCES.get(error.code, "lookout could not answer.").format(user=user)
    return f"{sentence} ({error.message})" if error.message else sentence

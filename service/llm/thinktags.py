"""Split ``<think>…</think>`` out of streamed answer text.

Servers that do not parse reasoning themselves (llama.cpp with ``--reasoning-format
none``, vLLM without ``--reasoning-parser``, older Ollama, DeepSeek-R1 distills behind
proxies) leave the model's thoughts in ``content``, wrapped in ``<think>`` tags. Shown to
a user or stored in history, they would leak the scratchpad and bloat the context.

Only a ``<think>`` at the very start of the answer (after white space) counts, so an
answer that merely mentions the tag is left alone. Tags split across chunks are handled
by holding back the few characters that could begin one.

Some chat templates open the reasoning themselves (DeepSeek-R1, QwQ: the prompt ends in
``<think>``), so the stream starts inside it and only ``</think>`` appears. A splitter
told so (``opened=True``) starts inside the reasoning; one that was not, and meets a
``</think>`` with no ``<think>`` before it, says so with a ``("reclassify", text)`` piece:
everything it released as content so far, and ``text``, was reasoning. The caller
remembers it for the provider, so the scratchpad reaches a user at most once.
"""

from __future__ import annotations

from typing import Literal

OPEN = "<think>"
CLOSE = "</think>"

Piece = tuple[Literal["content", "reasoning", "reclassify", "unreason"], str]
"""``reclassify``: the content released so far, and this text, were reasoning.
``unreason``: the reasoning released so far, and this text, were the answer."""

_LOOKBACK = len(CLOSE) - 1


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that could be the start of ``tag``."""
    for size in range(min(len(text), len(tag) - 1), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


class ThinkTagSplitter:
    """Feed content deltas; get back content and reasoning pieces in order.

    Args:
        opened: The template opens the reasoning itself: start inside it.
    """

    def __init__(self, *, opened: bool = False) -> None:
        self._state: Literal["start", "thinking", "after", "answer"] = (
            "thinking" if opened else "start"
        )
        self._assumed_open = opened
        self._buffer = ""
        self._saw_tag = False
        self._tail = ""
        self.reclassified = False
        """A ``</think>`` without ``<think>`` was met: the template opens the reasoning."""

    def feed(self, text: str) -> list[Piece]:
        """Pieces that can be released now (possibly none while a tag may be forming)."""
        if self._state == "after":
            # The blank lines between "</think>" and the answer may come in later chunks.
            text = text.lstrip()
            if text:
                self._state = "answer"
        if self._state == "answer":
            return self._answer(text)
        if self._state == "after":
            return []
        self._buffer += text
        out: list[Piece] = []
        if self._state == "start":
            head = self._buffer.lstrip()
            if not head or (OPEN.startswith(head) and head != OPEN):
                return out  # still could be "<think>"
            if not head.startswith(OPEN):
                self._state = "answer"
                released, self._buffer = self._buffer, ""
                return self._answer(released)
            self._state = "thinking"
            self._saw_tag = True
            self._buffer = head[len(OPEN) :]
        end = self._buffer.find(CLOSE)
        if end >= 0:
            thought, rest = self._buffer[:end], self._buffer[end + len(CLOSE) :]
            self._state = "after"
            self._saw_tag = True
            self._buffer = ""
            if thought:
                out.append(("reasoning", thought))
            return out + self.feed(rest)
        keep = _partial_suffix(self._buffer, CLOSE)
        ready = self._buffer[: len(self._buffer) - keep]
        self._buffer = self._buffer[len(ready) :]
        if ready:
            out.append(("reasoning", ready))
        return out

    def _answer(self, text: str) -> list[Piece]:
        """Text in the answer; a first bare ``</think>`` turns what came before into reasoning."""
        if self._saw_tag or self.reclassified:
            return [("content", text)] if text else []
        joined = self._tail + text
        end = joined.find(CLOSE)
        if end < 0:
            # Keep the last few characters in view: a tag may be split across chunks.
            self._tail = joined[-_LOOKBACK:]
            return [("content", text)] if text else []
        self.reclassified = True
        already = len(self._tail)
        before = joined[already:end] if end >= already else ""
        rest = joined[end + len(CLOSE) :].lstrip()
        self._tail = ""
        out: list[Piece] = [("reclassify", before)]
        if rest:
            out.append(("content", rest))
        else:
            self._state = "after"
        return out

    def flush(self) -> list[Piece]:
        """Whatever is still held back once the stream ended."""
        held, self._buffer = self._buffer, ""
        if self._state == "thinking" and self._assumed_open and not self._saw_tag:
            # Assumed to start inside the reasoning, but no "</think>" came: the model
            # answered straight away, so what looked like reasoning was the answer.
            return [("unreason", held)]
        if not held:
            return []
        if self._state == "thinking":
            return [("reasoning", held)]
        return [("content", held)]

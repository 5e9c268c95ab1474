"""Split ``<think>…</think>`` out of streamed answer text.

Servers that do not parse reasoning themselves (llama.cpp with ``--reasoning-format
none``, vLLM without ``--reasoning-parser``, older Ollama, DeepSeek-R1 distills behind
proxies) leave the model's thoughts in ``content``, wrapped in ``<think>`` tags. Shown to
a user or stored in history, they would leak the scratchpad and bloat the context.

Only a ``<think>`` at the very start of the answer (after white space) counts, so an
answer that merely mentions the tag is left alone. Tags split across chunks are handled
by holding back the few characters that could begin one.
"""

from __future__ import annotations

from typing import Literal

OPEN = "<think>"
CLOSE = "</think>"

Piece = tuple[Literal["content", "reasoning"], str]


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that could be the start of ``tag``."""
    for size in range(min(len(text), len(tag) - 1), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


class ThinkTagSplitter:
    """Feed content deltas; get back content and reasoning pieces in order."""

    def __init__(self) -> None:
        self._state: Literal["start", "thinking", "after", "answer"] = "start"
        self._buffer = ""

    def feed(self, text: str) -> list[Piece]:
        """Pieces that can be released now (possibly none while a tag may be forming)."""
        if self._state == "after":
            # The blank lines between "</think>" and the answer may come in later chunks.
            text = text.lstrip()
            if text:
                self._state = "answer"
        if self._state == "answer":
            return [("content", text)] if text else []
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
                return [("content", released)]
            self._state = "thinking"
            self._buffer = head[len(OPEN) :]
        end = self._buffer.find(CLOSE)
        if end >= 0:
            thought, rest = self._buffer[:end], self._buffer[end + len(CLOSE) :]
            self._state = "after"
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

    def flush(self) -> list[Piece]:
        """Whatever is still held back once the stream ended."""
        held, self._buffer = self._buffer, ""
        if not held:
            return []
        if self._state == "thinking":
            return [("reasoning", held)]
        return [("content", held)]

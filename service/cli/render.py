"""Terminal output for the command line: a streamed answer, tool calls, tables.

The answer alone goes to stdout, so ``answer=$(lookout ask …)`` captures just the text;
tool calls, reasoning and the conversation id go to stderr, dimmed on a terminal.
"""

from __future__ import annotations

import json
import shutil
import sys
from typing import Any, TextIO

DIM, RESET = "\x1b[2m", "\x1b[0m"
ARG_CHARS = 80
RESULT_CHARS = 100


def summarize(value: Any, limit: int) -> str:
    """One line of at most ``limit`` characters: strings as they are, the rest as JSON."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Renderer:
    """Prints the replies of one chat request as they arrive."""

    def __init__(self, out: TextIO, err: TextIO, *, show_reasoning: bool = False) -> None:
        self._out = out
        self._err = err
        self._show_reasoning = show_reasoning
        self._dim = err.isatty()
        # On a terminal a tool call breaks the answer's line; piped, stdout stays the
        # exact answer text.
        self._separate = out.isatty()
        self._out_mid_line = False
        self._err_mid_line = False
        self._streamed = False

    def reply(self, reply: dict[str, Any]) -> None:
        """Render one reply (non-terminal ones as they stream; ``done`` via :meth:`done`)."""
        kind = reply.get("type")
        if kind == "content":
            self._content(str(reply.get("delta", "")))
        elif kind == "reasoning" and self._show_reasoning:
            self._note(str(reply.get("delta", "")), newline=False)
        elif kind == "tool_call":
            args = summarize(reply.get("arguments", {}), ARG_CHARS)
            self._note(f"→ {reply.get('name')} {args}\n")
        elif kind == "tool_result":
            status = "ok" if reply.get("ok") else "failed"
            result = summarize(reply.get("result"), RESULT_CHARS)
            self._note(f"← {reply.get('name')} {status}: {result}\n")

    def done(self, reply: dict[str, Any]) -> None:
        """Finish the answer (print it whole if nothing streamed) and the conversation id."""
        if not self._streamed:
            content = str((reply.get("message") or {}).get("content") or "")
            self._content(content)
        self.finish_line()
        conversation = reply.get("conversation_id")
        if conversation:
            rounds = reply.get("tool_iterations") or 0
            self._note(
                f"conversation {conversation} ({rounds} tool rounds); continue with: "
                f"lookout ask --conversation {conversation} …\n"
            )

    def finish_line(self) -> None:
        """End a half-written line on either stream."""
        if self._out_mid_line:
            self._out.write("\n")
            self._out.flush()
            self._out_mid_line = False
        if self._err_mid_line:
            self._err.write("\n")
            self._err.flush()
            self._err_mid_line = False

    def _content(self, text: str) -> None:
        if not text:
            return
        if self._err_mid_line:
            self._err.write("\n")
            self._err_mid_line = False
        self._streamed = True
        self._out.write(text)
        self._out.flush()
        self._out_mid_line = not text.endswith("\n")

    def _note(self, text: str, *, newline: bool = True) -> None:
        if newline and self._out_mid_line and self._separate:
            self._out.write("\n")
            self._out.flush()
            self._out_mid_line = False
        if newline and self._err_mid_line:
            text = "\n" + text
        self._err.write(f"{DIM}{text}{RESET}" if self._dim else text)
        self._err.flush()
        self._err_mid_line = not text.endswith("\n")


def print_table(headers: list[str], rows: list[list[str]], out: TextIO | None = None) -> None:
    """Left-aligned columns; on a terminal the last column is cut to its width."""
    out = out or sys.stdout
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    if out.isatty():
        width = shutil.get_terminal_size().columns
        widths[-1] = min(widths[-1], max(20, width - sum(w + 2 for w in widths[:-1])))
    for row in [headers, *rows]:
        cells = [cell.ljust(w) for cell, w in zip(row[:-1], widths[:-1], strict=True)]
        cells.append(summarize(row[-1], widths[-1]) if row[-1] else "")
        out.write("  ".join(cells).rstrip() + "\n")
    out.flush()

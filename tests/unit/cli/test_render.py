"""How `lookout ask` lays out a streamed answer, and the tables of the other commands."""

from __future__ import annotations

import io

import pytest

from service.cli.main import _parser
from service.cli.render import Renderer, print_table, summarize


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def play(replies, *, show_reasoning=False, err=None, out=None):
    out = out if out is not None else io.StringIO()
    err = err if err is not None else io.StringIO()
    r = Renderer(out, err, show_reasoning=show_reasoning)
    for reply in replies[:-1]:
        r.reply(reply)
    r.done(replies[-1])
    return out.getvalue(), err.getvalue()


STREAM = [
    {"type": "reasoning", "delta": "Let me look."},
    {"type": "content", "delta": "Checking"},
    {"type": "tool_call", "call_id": "c1", "name": "search_objects", "arguments": {"label": "person"}},
    {"type": "tool_result", "call_id": "c1", "name": "search_objects", "ok": True,
     "result": {"count": 2, "objects": [{"camera": "front_door"}]}},
    {"type": "content", "delta": "Alice came "},
    {"type": "content", "delta": "by."},
    {"type": "stats", "llm_calls": 2},
    {"type": "done", "message": {"role": "assistant", "content": "CheckingAlice came by."},
     "conversation_id": "c0ffee", "tool_iterations": 1},
]  # fmt: skip


def test_the_answer_alone_goes_to_stdout():
    out, err = play(STREAM)
    assert out == "CheckingAlice came by.\n"  # piped: exactly the answer
    assert "Let me look." not in err  # reasoning hidden by default
    assert '→ search_objects {"label": "person"}' in err
    assert "← search_objects ok: " in err and '"count": 2' in err
    assert "conversation c0ffee" in err and "--conversation c0ffee" in err
    assert "\x1b[" not in err  # no colour codes when stderr is not a terminal


def test_on_a_terminal_reasoning_is_dimmed_and_tool_calls_break_the_line():
    out, err = play(STREAM, show_reasoning=True, err=Tty(), out=Tty())
    assert "\x1b[2mLet me look.\x1b[0m" in err
    assert out == "Checking\nAlice came by.\n"


def test_a_non_streamed_answer_is_printed_whole():
    out, err = play(
        [{"type": "done", "message": {"content": "All quiet."}, "conversation_id": None}]
    )
    assert out == "All quiet.\n" and err == ""


def test_a_failed_tool_is_marked():
    _, err = play(
        [
            {
                "type": "tool_result",
                "name": "get_live_context",
                "ok": False,
                "result": {"error": "camera offline"},
            },
            {"type": "done", "message": {"content": "Sorry."}},
        ]
    )
    assert "← get_live_context failed: " in err and "camera offline" in err


def test_summarize_cuts_long_values_to_one_line():
    assert summarize("a\nb", 10) == "a b"
    assert (
        summarize({"k": "x" * 100}, 20).endswith("…") and len(summarize({"k": "x" * 100}, 20)) == 20
    )


def test_table_columns_line_up():
    out = io.StringIO()
    print_table(
        ["JOB", "CAMERA", "CONDITION"],
        [["a1", "front_door", "a parcel"], ["bb22", "yard", "x"]],
        out,
    )
    lines = out.getvalue().splitlines()
    assert lines[0].index("CAMERA") == lines[1].index("front_door") == lines[2].index("yard")


@pytest.mark.parametrize(
    "argv",
    [
        ["ask", "who", "came", "by?", "--conversation", "c1", "--json"],
        [
            "watch",
            "start",
            "--camera",
            "front_door",
            "--condition",
            "a parcel",
            "--labels",
            "person,car",
        ],
        ["watch", "list", "--user", "alice"],
        ["watch", "cancel", "j1", "--timeout", "3"],
        ["tools", "--run", "search_objects", "--args", "{}"],
        ["events", "--camera", "driveway", "--label", "car", "--limit", "5"],
        ["health", "--host", "h", "--port", "1884"],
    ],
)
def test_every_command_takes_the_shared_options(argv):
    args = _parser().parse_args([*argv, "--config", "x.yml"])
    assert args.config == "x.yml" and args.command == argv[0]
    assert hasattr(args, "timeout") and hasattr(args, "json") and hasattr(args, "user")

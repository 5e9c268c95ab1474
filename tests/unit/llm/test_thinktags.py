"""Reasoning in content: tagged, opened by the template, or assumed opened and not."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from service.llm.thinktags import ThinkTagSplitter
from service.llm.turn import _without_partial_close


def split(chunks: list[str], **kw: bool) -> tuple[str, str, ThinkTagSplitter]:
    """(answer, reasoning) as a turn would assemble them from the pieces."""
    splitter = ThinkTagSplitter(**kw)
    content: list[str] = []
    reasoning: list[str] = []
    for piece in [p for c in chunks for p in splitter.feed(c)] + splitter.flush():
        kind, text = piece
        if kind == "content":
            content.append(text)
        elif kind == "reasoning":
            reasoning.append(text)
        elif kind == "reclassify":
            reasoning.append(_without_partial_close("".join(content)) + text)
            content = []
        else:  # unreason
            content = ["".join(reasoning) + text]
            reasoning = []
    return "".join(content), "".join(reasoning), splitter


def test_a_template_that_opens_thinking_is_noticed_and_the_scratchpad_moved():
    answer, reasoning, splitter = split(
        ["Okay, the user asks", " about the gate.</think>", "\n\nIt is shut."]
    )
    assert (answer, reasoning) == ("It is shut.", "Okay, the user asks about the gate.")
    assert splitter.reclassified


def test_told_it_opens_thinking_the_stream_starts_inside():
    answer, reasoning, splitter = split(["Hmm, gate.", "</think>\n", "Shut."], opened=True)
    assert (answer, reasoning) == ("Shut.", "Hmm, gate.")
    assert not splitter.reclassified


def test_assumed_open_but_the_model_answered_straight_away():
    # Thinking was off for this request: no </think> ever comes.
    answer, reasoning, _ = split(["The gate ", "is shut."], opened=True)
    assert (answer, reasoning) == ("The gate is shut.", "")


def test_an_answer_mentioning_the_tag_later_is_still_an_answer_after_a_real_tag():
    answer, reasoning, _ = split(["<think>hm</think>", "Use </think> to close."])
    assert (answer, reasoning) == ("Use </think> to close.", "hm")


@given(st.integers(min_value=1, max_value=40))
def test_any_chunking_of_an_opened_stream_gives_the_same_split(cut):
    text = "Let me think. The driveway camera.</think>\n\nThe car is there."
    chunks = [text[i : i + cut] for i in range(0, len(text), cut)]
    answer, reasoning, _ = split(chunks)
    assert answer == "The car is there."
    assert reasoning == "Let me think. The driveway camera."

"""Priming plans: what a new upstream conversation is sent when the context exceeds one turn."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from service.priming import LAST, MESSAGE, OVERHEAD, PART, plan, split, turns, update_plan, upstream_turns


def body_of(text: str) -> str:
    return text.split("\n\n", 1)[1]


def test_small_context_is_injected_the_ordinary_way() -> None:
    primed = plan("hi", [("user", "a"), ("assistant", "b")], "be brief", budget=10000, max_context=32000)
    assert primed.primers == () and primed.text == "hi" and primed.inject and primed.turns == 1


def test_long_system_prompt_is_primed_with_the_question_in_the_last_part() -> None:
    system = "\n".join(f"rule {i}: " + "x" * 90 for i in range(400))  # ~40 KB, Codex-sized
    primed = plan("hello", [], system, budget=10000, max_context=64000)
    context = f"[system](#additional_instructions)\n{system}"
    assert not primed.inject
    # ⌈(context + question) / (budget − header)⌉ turns, and no turn of its own for the question.
    assert primed.turns == math.ceil((len(context) + len(MESSAGE) + 7) / (10000 - OVERHEAD)) == 5
    assert all(len(text) <= 10000 for text in (*primed.primers, primed.text))
    assert primed.primers[0].startswith("[Context part 1 of 5.")
    assert primed.text.startswith("[Context part 5 of 5, the last.")
    assert primed.text.endswith(f"\n{MESSAGE}hello")
    joined = "".join(body_of(text) for text in (*primed.primers, primed.text))
    assert joined.replace("\n", "") == f"{context}\n\n{MESSAGE}hello".replace("\n", "")


def test_the_question_travels_whole_in_the_last_part_when_it_can() -> None:
    history = [("user", "u" * 9000), ("assistant", "a" * 5000)]
    primed = plan("what now? " * 300, history, "", budget=10000, max_context=64000)
    assert primed.turns == 2
    assert body_of(primed.text).startswith(MESSAGE) or f"\n{MESSAGE}" in primed.text
    assert ("what now? " * 300).strip() in primed.text
    assert MESSAGE not in primed.primers[0]


def test_a_prompt_too_long_for_one_turn_ends_in_the_last_part() -> None:
    prompt = "q" * 24000 + " and the real question?"
    primed = plan(prompt, [], "", budget=10000, max_context=32000)
    assert primed.turns == 3 and not primed.inject
    assert all(len(text) <= 10000 for text in (*primed.primers, primed.text))
    # The final turn carries the user's words (their end), never only a note to answer.
    assert primed.text.endswith("and the real question?")
    assert primed.text.startswith(LAST.format(index=3, total=3, text=""))


def test_upstream_turns_counts_what_plan_sends() -> None:
    system = "s" * 25000
    assert upstream_turns("hi", [], system, budget=10000, max_context=64000) == 3
    assert upstream_turns("hi", [], "short", budget=10000, max_context=64000) == 1
    assert turns(0, 10000) == 1 and turns(10000 - OVERHEAD, 10000) == 1 and turns(10000, 10000) == 2


def test_changed_instructions_ride_with_the_prompt_or_go_ahead_in_parts() -> None:
    short = update_plan("next step", "[Updated instructions]\nbe terse", budget=10000)
    assert short.primers == () and short.text.endswith(f"{MESSAGE}next step") and not short.inject
    long = update_plan("next step", "[Updated instructions]\n" + "r" * 15000, budget=10000)
    assert long.turns == 2 and long.text.endswith("next step")
    assert long.primers[0].startswith(PART.format(index=1, total=2, text=""))


@given(st.text(alphabet="ab\n", min_size=0, max_size=3000), st.integers(min_value=20, max_value=500))
def test_split_keeps_every_character_but_cut_newlines_in_the_fewest_pieces(text: str, size: int) -> None:
    pieces = split(text, size)
    assert all(len(piece) <= size for piece in pieces)
    assert len(pieces) <= max(1, math.ceil(len(text) / size))
    assert "".join(pieces).replace("\n", "") == text.replace("\n", "")

"""Priming plans: what a new upstream conversation is sent when the context exceeds one turn."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from workers.priming import FINAL, LONG_PROMPT, plan, split


def test_small_context_is_injected_the_ordinary_way() -> None:
    primed = plan("hi", [("user", "a"), ("assistant", "b")], "be brief", budget=10000, max_context=32000)
    assert primed.primers == () and primed.text == "hi" and primed.inject


def test_long_system_prompt_is_sent_ahead_in_parts_within_the_budget() -> None:
    system = "\n".join(f"rule {i}: " + "x" * 90 for i in range(400))  # ~40 KB, Codex-sized
    primed = plan("hello", [], system, budget=10000, max_context=64000)
    assert not primed.inject
    assert len(primed.primers) == 5
    assert all(len(text) <= 10000 for text in primed.primers)
    assert primed.primers[0].startswith("[Context part 1 of 5.")
    assert primed.text == FINAL.format(prompt="hello")
    joined = "".join(text.split("\n\n", 1)[1] for text in primed.primers)
    assert joined.replace("\n", "") == f"[system](#additional_instructions)\n{system}".replace("\n", "")


def test_a_prompt_too_long_for_one_turn_travels_as_context_parts() -> None:
    primed = plan("q" * 25000, [], "", budget=10000, max_context=32000)
    assert len(primed.primers) == 3 and primed.text == LONG_PROMPT
    assert all(len(text) <= 10000 for text in primed.primers)


@given(st.text(alphabet="ab\n", min_size=0, max_size=3000), st.integers(min_value=20, max_value=500))
def test_split_keeps_every_character_but_cut_newlines_and_respects_the_size(text: str, size: int) -> None:
    pieces = split(text, size)
    assert all(len(piece) <= size for piece in pieces)
    assert "".join(pieces).replace("\n", "") == text.replace("\n", "")

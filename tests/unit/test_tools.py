"""The tool-call format, the tolerant parser, the streaming filter, the cuts and history folding."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.events import ToolCall
from service.tools import history, parser, prompts, structured
from service.tools.options import OutputFormat, Tool, TurnOptions
from workers import tooling
from workers.tooling import Cutter, Shaping
from workers.upstream.events import TextDelta

WEATHER = Tool(
    name="get_weather",
    description="Weather for a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
OPTIONS = TurnOptions(tools=(WEATHER, Tool(name="now")))
CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'


def stream(text: str, sizes: list[int]) -> tuple[str, parser.StreamFilter]:
    """Feed `text` in pieces; what the client was shown, and the filter."""
    filt, shown, at = parser.StreamFilter(), "", 0
    for size in sizes:
        shown += filt.feed(text[at : at + size])
        at += size
    shown += filt.feed(text[at:])
    return shown, filt


def test_strict_call_is_parsed_and_validated() -> None:
    parsed = parser.parse(CALL, OPTIONS)
    assert parsed.calls == (parser.Call("get_weather", '{"city":"Paris"}'),)
    assert parsed.problems == () and parsed.prose == ""


def test_prose_before_fence_and_trailing_text_are_tolerated() -> None:
    text = (
        'Let me check.\n```json\n{"name": "get_weather", "arguments": "{\\"city\\": \\"Oslo\\"}"}\n```\nDone.'
    )
    parsed = parser.parse(text, OPTIONS)
    assert parsed.prose == "Let me check."
    assert parsed.calls == (parser.Call("get_weather", '{"city":"Oslo"}'),)


def test_missing_close_tag_array_and_parallel_limit() -> None:
    text = (
        '<tool_call>[{"name": "now", "arguments": {}}, {"name": "get_weather", "arguments": {"city": "A"}}]'
    )
    assert [c.name for c in parser.parse(text, OPTIONS).calls] == ["now", "get_weather"]
    single = TurnOptions(tools=OPTIONS.tools, parallel=False)
    assert [c.name for c in parser.parse(text, single).calls] == ["now"]


def test_invalid_arguments_unknown_function_and_broken_json_are_problems() -> None:
    bad = parser.parse('<tool_call>{"name": "get_weather", "arguments": {}}</tool_call>', OPTIONS)
    assert bad.calls == () and "city" in bad.problems[0]
    assert parser.parse('<tool_call>{"name": "nope"}</tool_call>', OPTIONS).problems
    assert parser.parse('<tool_call>{"name": "now", "argu</tool_call>', OPTIONS).problems


def test_plain_answers_and_ordinary_code_are_not_calls() -> None:
    text = "Here:\n```python\nprint({'a': 1})\n```\nand {braces} too"
    parsed = parser.parse(text, OPTIONS)
    assert parsed.calls == () and not parsed.found_markup
    shown, filt = stream(text, [3, 5, 7, 11])
    assert shown + filt.rest(parsed) == text


def test_prose_streams_and_markup_is_held_back() -> None:
    text = "Checking the weather now. " + CALL + " trailing"
    for size in (1, 2, 5, 13, 40):
        shown, filt = stream(text, [size] * (len(text) // size))
        assert shown == "Checking the weather now."
        parsed = parser.parse(filt.text, OPTIONS)
        assert filt.rest(parsed) == "" and len(parsed.calls) == 1


@settings(max_examples=200, deadline=None)
@given(
    prose=st.text(alphabet=st.characters(blacklist_characters="<`{"), max_size=40),
    cuts=st.lists(st.integers(min_value=1, max_value=9), max_size=30),
)
def test_filter_never_leaks_markup_and_shows_all_prose(prose: str, cuts: list[int]) -> None:
    text = prose + CALL + "\nafter"
    shown, filt = stream(text, cuts)
    parsed = parser.parse(filt.text, OPTIONS)
    shown += filt.rest(parsed)
    assert "<tool_call" not in shown and "get_weather" not in shown
    assert shown == prose.rstrip()
    assert parsed.calls[0].arguments == '{"city":"Paris"}'


def test_stop_sequence_cuts_across_deltas_and_token_limit_cuts() -> None:
    cutter = Cutter(("END",), None)
    out = cutter.feed("one two E") + cutter.feed("N") + cutter.feed("D three")
    assert out == "one two " and cutter.finish == "stop"
    held = Cutter(("END",), None)
    assert held.feed("abc E") == "abc " and held.flush() == "E" and held.finish is None
    limited = Cutter((), 3)
    out = limited.feed("alpha beta gamma delta")
    assert out == "alpha beta gamma" and limited.finish == "length"


def test_structured_output_extracts_and_validates() -> None:
    schema = OutputFormat(
        kind="json_schema",
        schema={"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
    )
    assert structured.check('Sure:\n```json\n{"n": 3}\n```', schema) == ('{"n": 3}', "")
    value, problem = structured.check('{"n": "x"}', schema)
    assert value is None and "schema" in problem
    assert structured.check("no json", OutputFormat(kind="json_object"))[0] is None


def test_history_with_calls_folds_to_the_stored_transcript() -> None:
    calls = [{"id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'}]
    turns = history.fold(
        [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": "", "tool_calls": calls},
            {"role": "tool", "content": "sunny", "tool_call_id": "call_1"},
            {"role": "user", "content": "thanks"},
        ]
    )
    stored = prompts.assistant_text("", [("call_1", "get_weather", '{"city":"Paris"}')])
    assert turns[1] == {"role": "assistant", "content": stored}
    assert turns[2]["role"] == "user" and 'id="call_1" name="get_weather"' in turns[2]["content"]
    assert turns[2]["content"].endswith("thanks") and len(turns) == 3
    assert json.loads(stored[len("<tool_call>") : -len("</tool_call>")])["arguments"] == {"city": "Paris"}


def test_instruction_block_names_tools_and_choice() -> None:
    text = prompts.turn_text("hi", TurnOptions(tools=(WEATHER,), choice="get_weather"), send_tools=True)
    assert text.startswith("hi\n\n[gateway:tools]") and "get_weather" in text
    assert "must call the function get_weather" in text
    assert prompts.digest((WEATHER,)) != prompts.digest(OPTIONS.tools)


def shaped(
    options: TurnOptions, answers: list[list[str]], *, complete: bool = True
) -> tuple[list[Any], Shaping]:
    """Run `Shaping.shape` over scripted upstream answers (the first, then the repair's)."""
    from workers.upstream.events import Done, TextDelta

    def answer(deltas: list[str]) -> Iterator[Any]:
        yield from (TextDelta(d) for d in deltas)
        if complete:
            yield Done(text="".join(deltas))

    shaping = Shaping(options, handle=None)
    rest = iter(answers[1:])
    return list(shaping.shape(answer(answers[0]), lambda _text: answer(next(rest)))), shaping


def test_shaping_turns_markup_into_a_tool_call_event_and_keeps_the_transcript() -> None:
    events, shaping = shaped(OPTIONS, [["Sure. <tool_", 'call>{"name": "now", "arguments": {}}</tool_call>']])
    texts = [e.text for e in events if isinstance(e, TextDelta)]
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert texts[0] == "Sure." and calls[0].name == "now" and events[-1].finish_reason == "tool_calls"
    assert shaping.stored_text == prompts.assistant_text("Sure.", [(calls[0].id, "now", "{}")])
    assert shaping.done_extra()["tool_calls"] == [
        {"id": c.id, "name": c.name, "arguments": c.arguments} for c in calls
    ]


def test_shaping_repairs_once_then_answers_in_prose_under_auto() -> None:
    broken = ['<tool_call>{"name": "get_weather", "arguments": {}}</tool_call>']
    events, _ = shaped(OPTIONS, [["Hmm. ", *broken], broken])
    assert not any(isinstance(e, ToolCall) for e in events)
    assert events[-1].finish_reason == "stop" and events[-1].text == "Hmm."


def test_shaping_required_without_a_call_is_an_error_and_cancel_ends_quietly() -> None:
    import pytest as _pytest

    from service.errors import ApiError

    required = TurnOptions(tools=OPTIONS.tools, choice="required")
    with _pytest.raises(ApiError) as caught:
        shaped(required, [["no call"], ["still none"]])
    assert caught.value.code == "tool_call_failed"
    events, _ = shaped(required, [["partial"]], complete=False)
    assert [type(e).__name__ for e in events] == ["TextDelta"]  # cancelled: no Done, no repair, no error


def test_the_quoted_format_line_is_not_a_call() -> None:
    text = "You told me: " + prompts.instructions(OPTIONS.tools) + " and my name is Ada"
    shown, filt = stream(text, [7] * 200)
    parsed = parser.parse(filt.text, OPTIONS)
    assert parsed.calls == () and not parsed.found_markup
    assert shown + filt.rest(parsed) == text


def test_the_token_limit_keeps_a_running_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """Audit round 3, N12: past max_tokens' byte count, every delta re-tokenized the whole answer
    (quadratic). Now each delta re-counts a short tail: the limit lands on the same text as one
    tokenization of the whole answer, and the characters tokenized stay linear in the answer.
    (The real tokenizer runs; a spy only adds up the lengths it is given.)"""
    from service import tokens

    words = " ".join(f"word{i} x{i % 7}  y,  {i}" for i in range(1500))
    limit = len(tokens.encoding().encode(words)) - 40
    expected = tokens.encoding().decode(tokens.encoding().encode(words)[:limit])
    counted = [0]

    def spy(text: str) -> int:
        counted[0] += len(text)
        return tokens.count_text(text)

    monkeypatch.setattr(tooling, "count_text", spy)
    cutter = Cutter((), limit)
    shown = "".join(cutter.feed(words[i : i + 5]) for i in range(0, len(words), 5))
    assert cutter.finish == "length" and shown == expected
    assert counted[0] <= 2 * len(words) + (len(words) // 5) * (tooling.SETTLE_TAIL + 10)


def test_answers_nested_thousands_deep_are_problems_not_crashes() -> None:
    """Audit round 3, N12: a RecursionError in the answer parsers was a 500."""
    deep = "[" * 5000 + "]" * 5000
    value, problem = structured.check("```json\n" + deep + "\n```", OutputFormat(kind="json_object"))
    assert value is None and "deeply" in problem
    options = TurnOptions(tools=(Tool(name="f"),))
    parsed = parser.parse('<tool_call>{"name": "f", "arguments": ' + deep + "}</tool_call>", options)
    assert parsed.calls == () and parsed.problems
    as_text = parser.parse('<tool_call>{"name": "f", "arguments": "' + deep + '"}</tool_call>', options)
    assert as_text.calls == () and as_text.problems
    near = "[" * 900 + "]" * 900
    value, problem = structured.check('{"a": ' + near + "}", OutputFormat(kind="json_object"))
    assert (value is None) == bool(problem)

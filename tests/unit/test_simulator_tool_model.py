"""The simulator's model reads the gateway's tool and format instructions as a real model would (#17).

It is given exactly the text the gateway sends upstream (`service.tools.prompts.turn_text`),
and its answers are read back by the gateway's own parser, so a call that the gateway would
refuse fails here too. Schemas are checked with jsonschema.
"""

from __future__ import annotations

import json

import jsonschema
import pytest

from service.tools import prompts
from service.tools.options import OutputFormat, Tool, TurnOptions
from service.tools.parser import parse
from tests.simulator import tool_model

WEATHER = Tool(
    "get_weather",
    "Current weather in a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
STOCKS = Tool(
    "stock_price",
    "Latest share price of a ticker",
    {
        "type": "object",
        "properties": {"ticker": {"type": "string"}, "days": {"type": "integer", "minimum": 7}},
        "required": ["ticker", "days"],
    },
)


def sent(prompt: str, **options: object) -> str:
    return prompts.turn_text(prompt, TurnOptions(tools=(WEATHER, STOCKS), **options), send_tools=True)  # type: ignore[arg-type]


def calls(answer: str | None) -> list[tuple[str, dict]]:
    assert answer is not None
    parsed = parse(answer, TurnOptions(tools=(WEATHER, STOCKS)))
    assert not parsed.problems, parsed.problems
    return [(call.name, json.loads(call.arguments)) for call in parsed.calls]


def test_auto_calls_the_tool_the_message_is_about() -> None:
    assert calls(tool_model.answer(sent("What is the weather in Paris?"), [])) == [
        ("get_weather", {"city": "Paris"})
    ]
    [(name, arguments)] = calls(tool_model.answer(sent("the share price of MSFT"), []))
    assert name == "stock_price"
    jsonschema.validate(arguments, STOCKS.parameters)


def test_auto_answers_in_text_when_no_tool_fits_and_after_results() -> None:
    assert tool_model.answer(sent("tell me a joke"), []) is None
    results = prompts.results_text([("call_1", "get_weather", "rain, 9C")])
    assert tool_model.answer(sent(results), [sent("weather?")]) is None


@pytest.mark.parametrize(("choice", "name"), [("required", "get_weather"), ("stock_price", "stock_price")])
def test_required_and_named_choices_always_call(choice: str, name: str) -> None:
    [(called, arguments)] = calls(tool_model.answer(sent("tell me a joke", choice=choice), []))
    assert called == name
    jsonschema.validate(arguments, WEATHER.parameters if name == "get_weather" else STOCKS.parameters)


def test_tool_choice_none_is_never_answered_with_a_call() -> None:
    earlier = sent("weather in Paris?")
    now = prompts.turn_text(
        "and the weather tomorrow?", TurnOptions(tools=(WEATHER,), choice="none"), send_tools=False
    )
    assert tool_model.answer(now, [earlier]) is None


def test_structured_output_is_valid_against_the_schema() -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "size": {"anyOf": [{"type": "integer", "minimum": 10}, {"type": "null"}]},
        },
        "required": ["name", "tags", "size"],
    }
    text = prompts.turn_text(
        "a city", TurnOptions(output=OutputFormat("json_schema", schema=schema)), send_tools=False
    )
    answer = tool_model.answer(text, [])
    assert answer is not None
    value = json.loads(answer.split("```json\n", 1)[1].split("\n```", 1)[0])
    jsonschema.validate(value, schema)


def test_the_scripted_prefixes_still_rule() -> None:
    scripted = sent("[sim:tools=1][sim:tool_prose] tell me a joke")
    answer = tool_model.answer(scripted, [])
    assert answer is not None and answer.startswith("Let me look that up for you.")
    assert tool_model.answer(sent("[sim:tools=0] weather in Paris?"), []) is None


def test_agent_context_blocks_are_not_what_the_user_asked() -> None:
    # Agent CLIs wrap environment details in tags around the user's words: those are not a request.
    message = "<environment_context>weather station shares price data</environment_context>\n\nsay hello"
    assert tool_model.answer(sent(message), []) is None
    assert calls(tool_model.answer(sent("<ctx>x</ctx>\n\nweather in Paris?"), [])) == [
        ("get_weather", {"city": "Paris"})
    ]

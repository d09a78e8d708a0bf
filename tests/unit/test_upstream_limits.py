"""The upstreams' own input limits: the simulator enforces Copilot's, the dialect keeps within it,
and a `text-too-long` that still arrives reaches the client as OpenAI's context_length_exceeded.
"""

from __future__ import annotations

from service.errors import ApiError
from service.limits import COPILOT_TEXT_LIMIT, context_budget, input_limits
from tests.support.simulator import SimulatorProcess
from tests.unit.test_simulator_copilot import create, turn, violations
from workers.upstream import copilot
from workers.upstream.context import TurnInput
from workers.upstream.copilot_decode import CopilotDecoder
from workers.upstream.errors import InputTooLong

LONG_HISTORY = tuple(("user" if i % 2 == 0 else "assistant", f"message {i} " + "x" * 990) for i in range(30))


def test_text_too_long_is_a_400_naming_messages() -> None:
    decoder = CopilotDecoder()
    try:
        decoder.feed({"event": "error", "errorCode": "text-too-long"})
    except InputTooLong as exc:
        error = ApiError.from_exception(exc)
    else:
        raise AssertionError("text-too-long must fail the turn")
    assert (error.status, error.error_type, error.code, error.param) == (
        400,
        "invalid_request_error",
        "context_length_exceeded",
        "messages",
    )
    assert error.headers() == {"x-should-retry": "false"}
    # It crosses the relay intact.
    assert ApiError.from_event(error.to_event()).body() == error.body()


def test_copilot_page_context_is_trimmed_to_the_upstreams_limit() -> None:
    turn_input = TurnInput("Hi", history=LONG_HISTORY, system="Be brief.", max_context_chars=32_000)
    page = copilot.turn_context(turn_input, fresh=True)["edge"]["pageContent"]
    assert len(page) <= COPILOT_TEXT_LIMIT
    assert page.startswith("[system](#additional_instructions)\nBe brief.")
    assert "message 29 " in page and "message 0 " not in page  # the newest kept, the oldest dropped
    # CONTEXT_MAX_CHARS still applies when it is the smaller bound.
    small = TurnInput("Hi", history=LONG_HISTORY, max_context_chars=3000)
    assert len(copilot.turn_context(small, fresh=True)["edge"]["pageContent"]) <= 3000


def test_chathub_documents_no_such_limit() -> None:
    assert input_limits("bing").message_chars is None
    assert context_budget("bing", 32_000) == 32_000


def test_simulator_refuses_a_long_text_as_copilot_does(sim: SimulatorProcess) -> None:
    conversation_id = create(sim)

    reply = turn(sim, conversation_id, "x" * (COPILOT_TEXT_LIMIT + 1))

    assert reply.events == [{"event": "error", "errorCode": "text-too-long"}]
    assert sim.conversation(conversation_id)["turns"] == []
    assert turn(sim, conversation_id, "y" * COPILOT_TEXT_LIMIT).text
    assert violations(sim) == []


def test_simulator_refuses_long_page_context(sim: SimulatorProcess) -> None:
    conversation_id = create(sim)
    page = {"edge": {"pageTitle": "t", "pageContent": "z" * (COPILOT_TEXT_LIMIT + 1), "pageUrl": "u"}}

    reply = turn(sim, conversation_id, "hi", context=page)

    assert reply.events[0]["errorCode"] == "text-too-long"


def test_simulator_text_too_long_fault(sim: SimulatorProcess) -> None:
    conversation_id = create(sim)
    reply = turn(sim, conversation_id, "[sim:text_too_long] short")
    assert reply.events == [{"event": "error", "errorCode": "text-too-long"}]

"""Answering a running turn through a surface's renderer: one JSON body, or one SSE stream.

A stream first holds up to STREAM_HOLD_SECONDS for the first event (`hold_first`) so
that a failure the worker reports at once (429 from the upstream, no worker at all)
still reaches the client as a real HTTP status instead of an error inside a 200
stream. A non-streamed answer waits for the whole turn (`collect`). Either way the
run is closed exactly once, and the surface only ever sees its renderer's hooks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from flask import Response, current_app, jsonify

from service.errors import ApiError
from service.events import Done, Failed, Limits, RelayEvent, Terminal
from service.runtime import trace
from service.web.http.extension import Gateway
from service.web.pipeline import resume, tracing
from service.web.pipeline.answer import Answer
from service.web.pipeline.request import ChatRequest
from service.web.pipeline.run import Run
from service.web.pipeline.stream import EncodedStream, Renderer
from service.web.pipeline.watch import watch

MakeRenderer = Callable[[Run, ChatRequest], Renderer]
"""What a surface hands the pipeline: given the run and the request, its renderer."""

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


# How a response that failed before it was handed over ends its run: cancel the turn, free its slot.
EARLY_FAILURE = Failed(error={"code": "response_failed"}, synthetic=True)


def answer_turn(gw: Gateway, run: Run, chat: ChatRequest, make: MakeRenderer) -> Response:
    """The response to a running turn: the renderer's whole body, or its SSE stream.

    Whatever fails before the response is handed over (a renderer storing its
    in-progress object, say) closes the run, so no key slot, subscription or turn leaks;
    a run already closed by the failure is left as it is.
    """
    try:
        return _answer(gw, run, chat, make)
    except BaseException:
        run.close(gw, EARLY_FAILURE)
        raise


def _answer(gw: Gateway, run: Run, chat: ChatRequest, make: MakeRenderer) -> Response:
    renderer = make(run, chat)
    run.answer = renderer.metered()  # what was sent, for the key's token usage
    if not chat.stream:
        renderer.waiting()
        try:
            done = collect(gw, run, renderer.answer)
        except ApiError as exc:
            renderer.refused(exc)
            raise
        return jsonify(renderer.complete(done))
    try:
        events, first = hold_first(gw, run)
        trace.mark("first_event")
    except ApiError as exc:
        renderer.refused(exc)
        raise

    app = current_app._get_current_object()  # type: ignore[attr-defined]  # the body outlives the request

    def on_close(terminal: Terminal | None) -> None:
        resume.closed(app, gw, run, renderer, terminal, lambda: make(run, chat))

    on_first = tracing.saver(gw.redis, run.turn.completion_id)
    sub = run.sub
    body = EncodedStream(
        renderer,
        events,
        first,
        on_close=on_close,
        position=lambda: sub.position,
        on_first=on_first,
        ready=sub.ready,
    )
    # The body yields bytes and closes itself: the WSGI server iterates it as it is.
    return Response(
        body, status=200, mimetype="text/event-stream", headers=SSE_HEADERS, direct_passthrough=True
    )


def collect(gw: Gateway, run: Run, answer: Answer) -> Done:
    """Wait for the whole answer into `answer`; the `done` event, or raise the turn's error."""
    turn = run.turn
    terminal: Terminal | None = None
    try:
        for event in watch(run.sub, gw.redis, turn.completion_id, gw.settings):
            if event is None:
                continue
            if isinstance(event, Done | Failed):
                terminal = event
            elif isinstance(event, Limits):
                run.turns_remaining = max(0, int(event.max) - int(event.used))
            answer.add(event)
    finally:
        run.close(gw, terminal)
    if not isinstance(terminal, Done):  # watch only ends on a terminal event
        raise ApiError.from_event(dict(terminal.error) if terminal is not None else {})
    return terminal


def hold_first(gw: Gateway, run: Run) -> tuple[Iterator[RelayEvent | None], RelayEvent | None]:
    """The turn's events and the first one, held for briefly before a stream commits to a 200.

    An error that arrives within the hold is raised, so the client gets a real status.
    """
    turn = run.turn
    hold = gw.settings.stream_hold_seconds
    events = watch(run.sub, gw.redis, turn.completion_id, gw.settings, hold=hold if hold > 0 else None)
    first: RelayEvent | None = None
    if hold > 0:
        try:
            first = next(events)
        except BaseException:
            run.close(gw, None)
            raise
        if isinstance(first, Failed):
            run.close(gw, first)
            raise ApiError.from_event(dict(first.error))
    return events, first

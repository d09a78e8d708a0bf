"""Which failed turns the worker expected: those are logged as one WARNING line, not a traceback.

A turn that fails with an answer the client already got (an `ApiError` such as
`tool_call_failed` or an empty pool, an upstream failure, a turn that outlived
JOB_TIMEOUT, a worker shutting down) is an outcome, not a bug: `TurnRunner.run` logs it
once (`event=turn_failed`, with the error class and the turn's ids). RQ would log each
again at ERROR with a 40-line traceback; `GeventWorker.handle_exception` asks here and
keeps the traceback for what the code did not expect (a worker's own shutdown is expected
too; the pool checks that itself).
"""

from __future__ import annotations

from rq.timeouts import JobTimeoutException

from service.errors import ApiError
from workers.upstream.errors import UpstreamError

EXPECTED: tuple[type[BaseException], ...] = (ApiError, UpstreamError, JobTimeoutException)


def expected(exc: BaseException | None) -> bool:
    """Whether a failed turn's exception is an outcome the client was already told about."""
    return isinstance(exc, EXPECTED)

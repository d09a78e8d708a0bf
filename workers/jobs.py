"""RQ job functions, enqueued by dotted path (`workers.jobs.run_turn`) with JSON arguments."""

from __future__ import annotations

from typing import Any

from rq import get_current_job

from service.runtime import trace
from service.runtime.logs import bind_turn
from service.turns import TurnRequest
from workers.context import current_context
from workers.instrument import job_metrics
from workers.turn import TurnRunner


def run_turn(payload: dict[str, Any]) -> dict[str, Any]:
    """Run one chat turn upstream and relay it; raises on failure so RQ records it."""
    request = TurnRequest.from_json(payload)
    traced = trace.current()
    if traced is not None:
        traced.keep = request.trace  # only a turn that asked keeps (and saves) its trace
        traced.mark("job_started")
    # Every log line of this greenlet now names the request, completion and conversation.
    bind_turn(
        request_id=request.request_id, job_id=request.completion_id, conversation_id=request.conversation_id
    )
    job = get_current_job()
    try:
        with job_metrics(job) as summary:
            summary.update(TurnRunner(current_context(), request).run())
        return summary
    finally:
        trace.save(current_context().redis, request.completion_id, trace.stop())
        if job is not None:  # RQ saves the job once more as it records the outcome: without the text
            job.args = (request.redacted(),)


def check_account(account_id: str) -> dict[str, Any]:
    """`POST /admin/accounts/{id}/check`: the account's bootstrap and one short turn, step by step."""
    from workers.account_check import check_pool_account

    context = current_context()
    return check_pool_account(context.settings, context.redis, account_id)

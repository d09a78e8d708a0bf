"""RQ job functions, enqueued by dotted path (`workers.jobs.run_turn`) with JSON arguments."""

from __future__ import annotations

from typing import Any

from service.logs import job_id_var
from service.turns import TurnRequest
from workers.context import current_context
from workers.turn import TurnRunner


def run_turn(payload: dict[str, Any]) -> dict[str, Any]:
    """Run one chat turn upstream and relay it; raises on failure so RQ records it."""
    request = TurnRequest.from_json(payload)
    job_id_var.set(request.completion_id)
    return TurnRunner(current_context(), request).run()

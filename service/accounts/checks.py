"""`POST /admin/accounts/{id}/check` on the web tier: a worker runs the check, the web tier waits.

The web tier never opens an upstream connection (it imports no worker code), so the check
(`workers.account_check`) is enqueued by dotted path like a turn, on the same queue, and
its report is awaited here for at most `deadline(settings)` seconds: long enough for a
bootstrap, a create and one short turn. No worker in time is a 504 saying so.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from rq import Queue
from rq.job import Job, JobStatus

from service.errors import ApiError
from service.runtime.settings import Settings

JOB_FUNCTION = "workers.jobs.check_account"
POLL = 0.2


class CheckTimeout(ApiError):
    """No worker finished the check in time."""

    status = 504
    code = "check_timeout"


def deadline(settings: Settings) -> float:
    """Seconds a check may take: four REST calls, the upgrade, and a turn's first-token wait."""
    return 5 * settings.upstream_connect_timeout + settings.upstream_first_token_timeout + 10


def run(
    queue: Queue, settings: Settings, account_id: str, *, sleep: Callable[[float], None] = time.sleep
) -> dict[str, Any]:
    """Enqueue the check of `account_id` and return the worker's report."""
    limit = deadline(settings)
    job = queue.enqueue(
        JOB_FUNCTION,
        account_id,
        job_id=f"check-{uuid.uuid4().hex}",
        job_timeout=int(limit) + 5,
        result_ttl=300,
        failure_ttl=3600,
        ttl=int(settings.queue_wait_timeout) + 5,
        description=f"check of account {account_id}",
    )
    ends = time.monotonic() + limit
    while time.monotonic() < ends:
        status = job.get_status(refresh=True)
        if status == JobStatus.FINISHED:
            fetched = Job.fetch(job.id, connection=queue.connection, serializer=queue.serializer)
            report = fetched.return_value()
            if isinstance(report, dict):
                return report
            break
        if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
            raise ApiError(f"The check of account {account_id} failed in the worker; see the worker log.")
        sleep(POLL)
    raise CheckTimeout(f"No worker finished the check of account {account_id} within {limit:g}s.")

"""What one job is, in a greenlet of `workers.gevent_worker.GeventWorker`: its class, its timeout
and the exception that stops it.

They stand apart from the worker's loop because they are about a single job, not about
dequeuing and bookkeeping: the turn (`workers.turn`) needs `WorkerShutdown` without
the worker, and each piece replaces one of RQ's (`Job.perform`, SIGALRM timeouts) on its own.
"""

from __future__ import annotations

from typing import Any

import gevent
from rq.job import Job, _job_stack
from rq.timeouts import BaseDeathPenalty
from rq.utils import import_attribute

_functions: dict[str, Any] = {}
"""Job functions by dotted path, imported once (RQ imports the path at every `func` read, twice a job)."""


class GeventDeathPenalty(BaseDeathPenalty):
    """A job timeout raised inside the job's own greenlet."""

    def setup_death_penalty(self) -> None:
        """Arm a gevent timer for this greenlet."""
        seconds = self._timeout if self._timeout and self._timeout > 0 else None
        self._gtimeout = gevent.Timeout(
            seconds, self._exception(f"Task exceeded maximum timeout value ({self._timeout} seconds)")
        )
        self._gtimeout.start()

    def cancel_death_penalty(self) -> None:
        """Disarm the timer."""
        self._gtimeout.close()


class TurnJob(Job):
    """RQ's job, minus the PERSIST `perform` sends on its own (`prepare_job_execution` does it),
    and with its function looked up once per process, not on every read."""

    @property
    def func(self) -> Any:
        """RQ's `Job.func`, a module-level function's lookup remembered."""
        name = self.func_name
        if name is None or self.instance:
            return super().func
        found = _functions.get(name)
        if found is None:
            found = _functions[name] = import_attribute(name)
        return found

    def perform(self) -> Any:
        """Run the job function (RQ's `Job.perform` without its round trip)."""
        _job_stack.push(self)  # type: ignore[no-untyped-call]  # rq's LocalStack is unannotated
        try:
            self._result = self._execute()
        finally:
            assert self is _job_stack.pop()  # type: ignore[no-untyped-call]
        return self._result


class WorkerShutdown(Exception):
    """Raised into jobs still running when the worker must exit."""

"""An RQ worker that runs many jobs at once in one process, on gevent greenlets.

Stock RQ forks a work horse per job: ~10–30 ms and ~30 MB per concurrent session, for
jobs that spend nearly all their time waiting on a websocket. `GeventWorker` keeps
RQ's bookkeeping — the started/finished/failed registries, executions, worker
heartbeats, job timeouts — but runs each job in a greenlet from a bounded pool:

- one dequeuer (the RQ work loop) pulls a job only when a pool slot is free, so a
  process never takes more turns than `concurrency`;
- `execution` is greenlet-local, because RQ keeps the current execution on the
  worker object and concurrent jobs would otherwise overwrite each other's;
- job timeouts are a `gevent.Timeout` raised in the job's greenlet (SIGALRM would hit
  whichever greenlet happened to be running);
- SIGTERM stops dequeuing and lets running turns finish for up to `shutdown_grace`
  seconds (PaaS platforms send SIGKILL ~30 s after SIGTERM); a second SIGTERM or
  SIGINT, or the end of the grace period, kills the remaining jobs, which then fail
  and tell their clients.

The process must be monkey-patched by gevent before anything else is imported; the
entry point (`workers/__main__.py`) does that.
"""

from __future__ import annotations

import logging
import signal
from typing import Any

import gevent
import gevent.local
import gevent.pool
from rq.exceptions import DequeueTimeout, StopRequested
from rq.job import Job
from rq.queue import Queue
from rq.timeouts import BaseDeathPenalty, JobTimeoutException
from rq.utils import now
from rq.worker import SimpleWorker, WorkerStatus

log = logging.getLogger(__name__)

HEARTBEAT_EVERY = 1.0


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


class WorkerShutdown(Exception):
    """Raised into jobs still running when the worker must exit."""


class GeventWorker(SimpleWorker):
    """RQ worker running up to `concurrency` jobs concurrently in greenlets."""

    death_penalty_class = GeventDeathPenalty

    def __init__(
        self, *args: Any, concurrency: int = 100, shutdown_grace: float = 25.0, **kwargs: Any
    ) -> None:
        self._local = gevent.local.local()
        super().__init__(*args, **kwargs)
        self.concurrency = concurrency
        self.shutdown_grace = shutdown_grace
        self._pool = gevent.pool.Pool(concurrency)

    # RQ keeps the running execution on the worker; make it per greenlet.
    @property
    def execution(self) -> Any:
        """The execution of the job running in the current greenlet."""
        return getattr(self._local, "execution", None)

    @execution.setter
    def execution(self, value: Any) -> None:
        self._local.execution = value

    @property
    def running_jobs(self) -> int:
        """Jobs currently running in this process."""
        return len(self._pool)

    @property
    def dequeue_timeout(self) -> int:
        """Block on the queues for at most a second, so stop requests are seen promptly."""
        return 1

    def _install_signal_handlers(self) -> None:
        gevent.signal_handler(signal.SIGTERM, self._on_stop_signal)
        gevent.signal_handler(signal.SIGINT, self._on_stop_signal)

    def _on_stop_signal(self) -> None:
        if self._stop_requested:
            log.warning("event=worker_cold_shutdown running=%d", self.running_jobs)
            self._pool.kill(WorkerShutdown("the worker was stopped"), block=False)
            return
        log.info("event=worker_warm_shutdown running=%d grace=%s", self.running_jobs, self.shutdown_grace)
        self._stop_requested = True

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        """Wait for a free slot, then for a job; give up when a stop is requested."""
        burst = timeout is None
        while not self._stop_requested:
            if self._pool.full():
                self._pool.wait_available(timeout=1.0)
                self.heartbeat()
                continue
            self.heartbeat()
            if self.should_run_maintenance_tasks:
                self.run_maintenance_tasks()
            try:
                result = self.queue_class.dequeue_any(
                    self._ordered_queues,
                    None if burst else self.dequeue_timeout,
                    connection=self.connection,
                    job_class=self.job_class,
                    serializer=self.serializer,
                    death_penalty_class=self.death_penalty_class,
                )
            except DequeueTimeout:
                continue
            if result is None and burst and self.running_jobs:
                self._pool.join(timeout=0.05)
                continue
            if result is not None:
                job, queue = result
                self.reorder_queues(reference_queue=queue)
                log.info("event=job_dequeued job_id=%s queue=%s", job.id, queue.name)
            return result
        raise StopRequested()

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Start the job in a greenlet, let it begin, and return."""
        self._pool.spawn(self._run_job, job, queue)
        # Yield once so the turn starts its bookkeeping now, ahead of the loop's own
        # heartbeat and suspension checks: those can wait, the first token cannot.
        gevent.sleep(0)

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        """RQ's heartbeat, at most once a second from the loop (its TTL is minutes)."""
        recent = (
            self.last_heartbeat is not None
            and (now() - self.last_heartbeat).total_seconds() < HEARTBEAT_EVERY
        )
        if timeout is None and pipeline is None and recent:
            return
        super().heartbeat(timeout, pipeline)

    def _run_job(self, job: Job, queue: Queue) -> None:
        try:
            self.prepare_execution(job)  # also marks the worker busy
            self.perform_job(job, queue)
        except Exception:
            log.exception("event=job_bookkeeping_failed job_id=%s", job.id)
        finally:
            self.execution = None
            if self.running_jobs <= 1:
                self.set_state(WorkerStatus.IDLE)

    def teardown(self) -> None:
        """Let running turns finish (bounded), then deregister as RQ does."""
        if self.running_jobs:
            log.info("event=worker_draining running=%d", self.running_jobs)
            self._pool.join(timeout=self.shutdown_grace)
        if self.running_jobs:
            log.warning("event=worker_killing_jobs running=%d", self.running_jobs)
            self._pool.kill(WorkerShutdown("the worker was stopped"), block=True, timeout=5)
        super().teardown()


__all__ = ["GeventDeathPenalty", "GeventWorker", "JobTimeoutException", "WorkerShutdown"]

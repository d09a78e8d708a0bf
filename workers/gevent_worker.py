"""An RQ worker that runs many jobs at once in one process, on gevent greenlets.

Stock RQ forks a work horse per job: ~10–30 ms and ~30 MB per concurrent session, for
jobs that spend nearly all their time waiting on a websocket. `GeventWorker` keeps
RQ's bookkeeping — the started/finished/failed registries, executions, worker
heartbeats, job timeouts — but runs each job in a greenlet from a bounded pool:

- one dequeuer (the RQ work loop) pulls a job only when a pool slot is free, so a
  process never takes more turns than `concurrency`; with the account pool it dequeues,
  starts (RQ's bookkeeping) and grants a new conversation's account in one round trip
  (`workers.dequeue`);
- `execution` is greenlet-local, because RQ keeps the current execution on the
  worker object and concurrent jobs would otherwise overwrite each other's;
- job timeouts are a `gevent.Timeout` raised in the job's greenlet (SIGALRM would hit
  whichever greenlet happened to be running; `workers.gevent_job`);
- Redis going away (a restart, a failover, a blip) never ends the process
  (`redis_outage.OutageTolerantWorker`): the loop backs off exponentially (RQ's own
  factors, capped at a few seconds so a returning Redis is noticed quickly), logs one
  warning per outage, and on return re-registers the worker if a Redis that lost its
  data forgot it; a worker started before its Redis waits for it the same way;
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
from redis.exceptions import NoScriptError
from rq.exceptions import DequeueTimeout, StopRequested
from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue
from rq.utils import now
from rq.worker import WorkerStatus

from service.runtime import trace
from workers import dequeue, outcomes
from workers.account_pool import Pool
from workers.dequeue_grants import drop_untaken, keep_ahead
from workers.gevent_job import GeventDeathPenalty, TurnJob, WorkerShutdown
from workers.redis_outage import REDIS_DOWN, OutageTolerantWorker

log = logging.getLogger(__name__)

_AGAIN = object()  # the dequeue step found nothing to return yet; loop again


class GeventWorker(OutageTolerantWorker):
    """RQ worker running up to `concurrency` jobs concurrently in greenlets."""

    death_penalty_class = GeventDeathPenalty
    job_class = TurnJob

    def __init__(
        self,
        *args: Any,
        concurrency: int = 100,
        shutdown_grace: float = 25.0,
        accounts: Pool | None = None,
        **kwargs: Any,
    ) -> None:
        self._local = gevent.local.local()
        super().__init__(*args, **kwargs)
        self.concurrency = concurrency
        self.shutdown_grace = shutdown_grace
        self._pool = gevent.pool.Pool(concurrency)
        self._traces: dict[str, trace.Trace] = {}  # a dequeued job's round-trip counter, until it runs
        # With the account pool, a job is dequeued, started and granted in one round trip
        # (`workers.dequeue`); its execution waits here for its greenlet.
        self.accounts: Pool | None = accounts
        self._started: dict[str, Execution] = {}
        self._drain = True  # take what a failed dequeue may have left on this worker's own list first

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
        """Wait for a free slot, then for a job; give up when a stop is requested.

        Unreachable Redis is waited out here with RQ's backoff (its own loop does the
        same), so neither `work()`'s catch-all nor the launcher ever sees it.
        """
        burst = timeout is None
        backoff = 1.0
        while not self._stop_requested:
            try:
                result = self._dequeue_once(burst)
            except DequeueTimeout:
                continue
            except REDIS_DOWN as exc:
                self._redis_failed(exc)
                self._sleep_unless_stopped(backoff)
                backoff = min(backoff * self.exponential_backoff_factor, self.max_connection_wait_time)
                continue
            if result is _AGAIN:
                continue
            return result  # type: ignore[return-value]
        raise StopRequested()

    def _dequeue_once(self, burst: bool) -> tuple[Job, Queue] | object | None:
        if self._pool.full():
            self._pool.wait_available(timeout=1.0)
            self.heartbeat()
            return _AGAIN
        self.heartbeat()
        if self.should_run_maintenance_tasks:
            self.run_maintenance_tasks()
        counter = trace.start("worker", keep=False)  # the dequeue's round trips count for its job
        result: tuple[Job, Queue] | object | None
        try:
            if self.accounts is not None and len(self._ordered_queues) == 1:
                result = self._dequeue_started(self._ordered_queues[0], burst)
            else:
                result = self.queue_class.dequeue_any(
                    self._ordered_queues,
                    None if burst else self.dequeue_timeout,
                    connection=self.connection,
                    job_class=self.job_class,
                    serializer=self.serializer,
                    death_penalty_class=self.death_penalty_class,
                )
        finally:
            trace.stop()  # the loop's own heartbeats and maintenance are nobody's
        self._redis_back()
        if result is _AGAIN:
            return _AGAIN
        if result is None and burst and self.running_jobs:
            self._pool.join(timeout=0.05)
            return _AGAIN
        if isinstance(result, tuple):
            job, queue = result
            counter.mark("dequeued")
            self._traces[job.id] = counter
            self.reorder_queues(reference_queue=queue)
            log.info("event=job_dequeued job_id=%s queue=%s", job.id, queue.name)
        return result

    def _dequeue_started(self, queue: Queue, burst: bool) -> tuple[Job, Queue] | object | None:
        """`workers.dequeue`: the job dequeued, started and (a new conversation's) granted at once."""
        assert self.accounts is not None
        drain, self._drain = self._drain, False
        try:
            got = dequeue.dequeue(
                self.connection,
                queue,
                worker_name=self.name,
                worker_key=self.key,
                wait=not drain,
                timeout=None if burst else self.dequeue_timeout,
                pool=self.accounts,
                job_class=self.job_class,
                serializer=self.serializer,
            )
        except BaseException as exc:
            self._drain = True  # the BLMOVE may have moved an id the script did not take
            if isinstance(exc, NoScriptError):
                dequeue.load_script(self.connection)  # a new or restarted Redis
                return _AGAIN
            raise
        if got is None:  # nothing came within the timeout (RQ's DequeueTimeout): only burst ends
            return None if burst and not drain else _AGAIN
        if isinstance(got, str):  # gone meanwhile: RQ's dequeue skips it too
            return _AGAIN
        job = got.job
        dequeue.mirror(self, job)
        self._started[job.id] = got.execution
        if got.ahead is not None:
            keep_ahead(job.id, got.ahead)
        return job, queue

    def run_maintenance_tasks(self) -> None:
        """RQ's clean-up, and the jobs a dead worker left on its own dequeue list (`dequeue.recover`)."""
        super().run_maintenance_tasks()
        if self.accounts is not None and len(self._ordered_queues) == 1:
            try:
                moved = dequeue.recover(self.connection, self._ordered_queues[0])
            except REDIS_DOWN as exc:
                self._redis_failed(exc)
                return
            if moved:
                log.warning("event=dequeue_recovered jobs=%d", moved)

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Start the job in a greenlet, let it begin, and return."""
        self._pool.spawn(self._run_job, job, queue)
        # Yield once so the turn starts its bookkeeping now, ahead of the loop's own
        # heartbeat and suspension checks: those can wait, the first token cannot.
        gevent.sleep(0)

    def handle_exception(self, job: Job, *exc_info: Any) -> None:
        """RQ's ERROR line and traceback only for the unexpected (`workers.outcomes`)."""
        exc = exc_info[1] if len(exc_info) > 1 else None
        if not (isinstance(exc, WorkerShutdown) or outcomes.expected(exc)):
            super().handle_exception(job, *exc_info)
            return
        for handler in self._exc_handlers:  # what RQ does after logging
            if handler(job, *exc_info) is False:
                break

    def _run_job(self, job: Job, queue: Queue) -> None:
        trace.adopt(self._traces.pop(job.id, None))  # the job's greenlet counts on from its dequeue
        try:
            # RQ's `prepare_execution` (the execution, the worker busy) is folded into
            # `prepare_job_execution`, which `perform_job` calls: one round trip, not three.
            self.perform_job(job, queue)
        except REDIS_DOWN as exc:  # RQ could not record the outcome; the job's keys expire
            log.warning("event=job_bookkeeping_failed job_id=%s error=%s", job.id, exc.__class__.__name__)
        except Exception:
            log.exception("event=job_bookkeeping_failed job_id=%s", job.id)
        finally:
            self.execution = None
            self._started.pop(job.id, None)
            drop_untaken(self.accounts, job.id)  # its turn never built its lane (it failed before)
            if self.running_jobs <= 1:
                try:
                    self.set_state(WorkerStatus.IDLE)
                except REDIS_DOWN:
                    pass  # the next heartbeat after the outage rewrites the worker's hash

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        """RQ's bookkeeping before a job runs, in ONE transaction: its execution (started registry),
        the worker busy on it, the job started and persisted (`TurnJob.perform` skips its own);
        none at all for a job `workers.dequeue` started."""
        execution = self._started.pop(job.id, None)
        if execution is not None:
            self.execution = execution
            return
        with self.connection.pipeline() as pipe:
            heartbeat_ttl = self.get_heartbeat_ttl(job)
            self.execution = Execution.create(job, heartbeat_ttl, pipeline=pipe, worker_name=self.name)
            self.set_state(WorkerStatus.BUSY, pipeline=pipe)
            self.set_current_job_id(job.id, pipeline=pipe)
            self.set_current_job_working_time(0, pipeline=pipe)
            self.heartbeat(heartbeat_ttl, pipeline=pipe)
            job.heartbeat(now(), heartbeat_ttl, pipeline=pipe)
            job.prepare_for_execution(self.name, pipeline=pipe)
            pipe.persist(job.key)
            if remove_from_intermediate_queue:
                pipe.lrem(
                    self.queue_class(job.origin, connection=self.connection).intermediate_queue_key, 1, job.id
                )
            pipe.execute()

    def teardown(self) -> None:
        """Let running turns finish (bounded), then deregister as RQ does."""
        if self.running_jobs:
            log.info("event=worker_draining running=%d", self.running_jobs)
            self._pool.join(timeout=self.shutdown_grace)
        if self.running_jobs:
            log.warning("event=worker_killing_jobs running=%d", self.running_jobs)
            self._pool.kill(WorkerShutdown("the worker was stopped"), block=True, timeout=5)
        try:
            super().teardown()  # type: ignore[no-untyped-call]  # rq: unannotated
        except REDIS_DOWN as exc:  # stopped during an outage: the worker's key expires by itself
            log.warning("event=worker_deregister_failed error=%s", exc.__class__.__name__)


__all__ = ["GeventWorker"]

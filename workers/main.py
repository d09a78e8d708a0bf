"""The worker process: settings, logging, metrics, one Redis pool, and a `GeventWorker` on the queue."""

from __future__ import annotations

import importlib
import logging
import os
import socket
from collections.abc import Mapping

import gevent
from redis.exceptions import RedisError
from rq import Queue
from rq.serializers import JSONSerializer

from service.accounts.sealing import SealingError
from service.accounts.warm import keep_warm
from service.runtime.logs import configure_logging
from service.runtime.metrics import start_worker_server
from service.runtime.settings import Settings, SettingsError, load_settings
from workers.account_pool import pool_for, usable_accounts
from workers.account_prober import run_prober
from workers.context import build_context, set_context
from workers.gevent_worker import GeventWorker
from workers.instrument import publish_configured_accounts
from workers.upstream import socket_park

log = logging.getLogger(__name__)


def main(environ: Mapping[str, str]) -> int:
    """Run a worker until SIGTERM; returns the process exit code."""
    try:
        settings = load_settings(environ)
        context = build_context(settings)
    except SettingsError as exc:
        print(f"worker: {exc}", flush=True)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    set_context(context)
    serve_metrics(settings)
    seeded = False
    try:
        pool_for(settings, context.redis).seed()  # UPSTREAM_COOKIES -> env-1…; idempotent
        seeded = True
    except SealingError as exc:
        print(f"worker: {exc}", flush=True)
        return 2
    except RedisError as exc:  # the prober seeds once Redis answers
        log.warning("event=account_seed_failed error=%s", exc.__class__.__name__)
    gevent.spawn(run_prober, settings, context.redis, seeded=seeded, stop=lambda: False, sleep=gevent.sleep)
    # The grant reads the pool from a snapshot this keeps fresh, so no turn pays for its refresh.
    gevent.spawn(keep_warm, pool_for(settings, context.redis).registry, sleep=gevent.sleep)
    # Import the job modules before the worker registers: RQ would import them on the first
    # job, and that import (jsonschema, its format checkers, the tool and upstream modules)
    # can take over a second, which the first turn would otherwise wait for in the queue.
    importlib.import_module("workers.jobs")
    queue = Queue(settings.queue_name, connection=context.redis, serializer=JSONSerializer)
    worker = GeventWorker(
        [queue],
        connection=context.redis,
        serializer=JSONSerializer,
        concurrency=settings.worker_concurrency,
        name=f"{socket.gethostname()}.{os.getpid()}",
    )
    log.info(
        "event=worker_start queue=%s concurrency=%d upstream=%s",
        settings.queue_name,
        settings.worker_concurrency,
        settings.upstream,
    )
    # Idle upstream sockets (`socket_park`) past their limit, or of accounts no longer usable,
    # close even when no turn comes.
    usable = usable_accounts(pool_for(settings, context.redis))
    gevent.spawn(socket_park.keep_swept, sleep=gevent.sleep, usable=usable)
    worker.work(logging_level=settings.log_level)
    socket_park.clear_all()  # close the kept sockets politely rather than by the process's exit
    return 0


def serve_metrics(settings: Settings) -> None:
    """Serve this process's Prometheus metrics on WORKER_METRICS_PORT (0 = off).

    A port already taken (two worker processes sharing a host and a port) is logged,
    not fatal: turns matter more than their metrics.
    """
    publish_configured_accounts(len(settings.upstream_cookies))
    if not settings.worker_metrics_port:
        return
    try:
        start_worker_server(settings.worker_metrics_port)
    except OSError as exc:
        log.warning("event=metrics_port_unavailable port=%d error=%s", settings.worker_metrics_port, exc)
        return
    log.info("event=metrics_serving port=%d", settings.worker_metrics_port)

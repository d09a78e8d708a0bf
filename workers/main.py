"""The worker process: settings, logging, one Redis pool, and a `GeventWorker` on the queue."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

import gevent
from redis.exceptions import RedisError
from rq import Queue
from rq.serializers import JSONSerializer

from service.accounts.sealing import SealingError
from service.logs import configure_logging
from service.settings import SettingsError, load_settings
from workers.account_pool import pool_for, run_prober
from workers.context import build_context, set_context
from workers.pool import GeventWorker

log = logging.getLogger(__name__)


def main(environ: Mapping[str, str]) -> int:
    """Run a worker until SIGTERM; returns the process exit code."""
    try:
        settings = load_settings(environ)
        context = build_context(settings)
    except SettingsError as exc:
        print(f"worker: {exc}", flush=True)
        return 2
    configure_logging(settings.log_level)
    set_context(context)
    seeded = False
    try:
        pool_for(settings, context.redis).seed()  # UPSTREAM_COOKIES -> env-1…; idempotent
        seeded = True
    except SealingError as exc:
        print(f"worker: {exc}", flush=True)
        return 2
    except RedisError:  # the prober seeds once Redis answers
        log.warning("event=account_seed_failed", exc_info=True)
    gevent.spawn(run_prober, settings, context.redis, seeded=seeded, stop=lambda: False, sleep=gevent.sleep)
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
    worker.work(logging_level=settings.log_level)
    return 0

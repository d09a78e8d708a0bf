"""gunicorn settings for the web tier (`gunicorn -c deploy/gunicorn.conf.py wsgi:app`).

The gevent worker class: an SSE stream spends its life waiting on Redis, and a
greenlet per stream costs kilobytes where a thread (gthread) or a process (sync)
costs far more. PORT is parsed by the same strict settings module as everything else.
WEB_CONCURRENCY (gunicorn's own variable) sets the number of web processes.
"""

import os

from service.logs import configure_logging
from service.settings import load_settings

_settings = load_settings(os.environ)
configure_logging(_settings.log_level)

bind = f"0.0.0.0:{_settings.port}"
worker_class = "gevent"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_connections = 1000
# gevent workers heartbeat the arbiter from their event loop; long streams are fine.
timeout = 60
graceful_timeout = 25
keepalive = 5
accesslog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms request_id=%({x-request-id}o)s'


def post_worker_init(worker: object) -> None:
    """On SIGTERM, end responses still open just before graceful_timeout, visibly (SSE error event)."""
    from service.web.stream import drain_on_sigterm

    drain_on_sigterm(worker.wsgi, worker.cfg.graceful_timeout)

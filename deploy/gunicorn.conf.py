"""gunicorn settings for the web tier (`gunicorn -c deploy/gunicorn.conf.py wsgi:app`).

The gevent worker class: an SSE stream spends its life waiting on Redis, and a
greenlet per stream costs kilobytes where a thread (gthread) or a process (sync)
costs far more. PORT is parsed by the same strict settings module as everything else.
WEB_CONCURRENCY (gunicorn's own variable) sets the number of web processes.

The bind address is a safety decision, not a detail: with no `API_KEYS` the gateway
hands the operator's Microsoft account to whoever reaches it, so it listens on
loopback only unless `ALLOW_OPEN=1` says serving everyone is meant. On a PaaS that
makes the health check fail, and the start-up line says which setting to add.
"""

import os
from typing import Any

from service.logs import configure_logging
from service.settings import SettingsError, load_settings

try:
    _settings = load_settings(os.environ)
except SettingsError as exc:  # one clear line, not gunicorn's traceback of this file
    raise SystemExit(f"web: {exc}") from None
configure_logging(_settings.log_level)

bind = f"{_settings.listen_host}:{_settings.port}"
worker_class = "gevent"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_connections = 1000
# gevent workers heartbeat the arbiter from their event loop; long streams are fine.
timeout = 60
graceful_timeout = 25
keepalive = 5
accesslog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms request_id=%({x-request-id}o)s'


def access_summary() -> tuple[str, str]:
    """(level, line) telling the operator who can reach this gateway, and how to change it."""
    where = f"{_settings.listen_host}:{_settings.port}"
    if _settings.auth_enabled:
        return "info", f"event=web_access bind={where} mode=keyed keys={len(_settings.api_keys)}"
    if _settings.allow_open:
        return "warning", (
            f"event=web_access bind={where} mode=open: ALLOW_OPEN=1 and no API_KEYS, so anyone who "
            "reaches this port uses the upstream account"
        )
    return "warning", (
        f"event=web_access bind={where} mode=loopback-only: no API_KEYS, so only this machine can "
        "connect; to serve other machines set API_KEYS (and SECRET_KEY), or ALLOW_OPEN=1 to run open"
    )


def when_ready(server: Any) -> None:
    """Say, once the socket is bound, who can reach it."""
    level, line = access_summary()
    getattr(server.log, level)(line)


def post_worker_init(worker: object) -> None:
    """On SIGTERM, end responses still open just before graceful_timeout, visibly (SSE error event)."""
    from service.web.stream import drain_on_sigterm

    drain_on_sigterm(worker.wsgi, worker.cfg.graceful_timeout)

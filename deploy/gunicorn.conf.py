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

import glob
import os
import shutil
import tempfile
from typing import Any

from gunicorn import glogging

from service.runtime.logs import IdsFilter, JsonFormatter, configure_logging
from service.runtime.settings import SettingsError, load_settings

try:
    _settings = load_settings(os.environ)
except SettingsError as exc:  # one clear line, not gunicorn's traceback of this file
    raise SystemExit(f"web: {exc}") from None
configure_logging(_settings.log_level, _settings.log_format)

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
# gunicorn's control socket (`gunicornc -s PATH`): one per master, not gunicorn's default one
# path per user, which every instance on the host (tests, a second gateway) would share.
# This file runs in the master, and again in the same master on a reload: the path stays.
_runtime_dir = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
control_socket = os.environ.get("GATEWAY_CONTROL_SOCKET") or os.path.join(
    _runtime_dir, f"gateway-web-{_settings.port}-{os.getpid()}.ctl"
)


def access_summary() -> tuple[str, str]:
    """(level, line) telling the operator who can reach this gateway, and how to change it."""
    where = f"{_settings.listen_host}:{_settings.port}"
    if _settings.auth_enabled:
        keys = f"keys={len(_settings.api_keys)} managed={'on' if _settings.admin_key else 'off'}"
        return "info", f"event=web_access bind={where} mode=keyed {keys}"
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
    server.log.info("event=web_control_socket path=%s", control_socket)


# --- Prometheus multi-process mode (service.runtime.metrics) -------------------------------------
# Each web process writes its metric values to files in PROMETHEUS_MULTIPROC_DIR, and
# /metrics merges them. The directory must be empty at every start (stale files from an
# earlier run would add up into the new one), so it is a fresh temporary directory unless
# the operator names one, which is then emptied. Set here, before any worker imports the
# app: prometheus-client decides at import whether it runs in multi-process mode. A
# reload (SIGHUP) runs this file again in the same master: the directory is kept then.
_master = str(os.getpid())
if os.environ.get("GATEWAY_METRICS_MASTER") != _master:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
        for _stale in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "*.db")):
            os.remove(_stale)
    else:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="gateway-metrics-")
        os.environ["GATEWAY_METRICS_TMPDIR"] = f"{_master}:{os.environ['PROMETHEUS_MULTIPROC_DIR']}"
    os.environ["GATEWAY_METRICS_MASTER"] = _master


def child_exit(server, worker):
    """A web process exited: its live gauges (turns in flight…) must stop counting."""
    # prometheus-client itself, not service.runtime.metrics: the master must not create metric files.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    """Remove the temporary metrics directory this master created (never the operator's)."""
    owner, _, directory = os.environ.get("GATEWAY_METRICS_TMPDIR", "").partition(":")
    if owner == str(os.getpid()) and directory:
        shutil.rmtree(directory, ignore_errors=True)


# --- LOG_FORMAT=json: gunicorn's own error and access lines as JSON too -------------------
class _JsonLogger(glogging.Logger):
    """gunicorn's logger with our JSON formatter and id filter on its handlers."""

    def setup(self, cfg):
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.setFormatter(JsonFormatter())
                handler.addFilter(IdsFilter())


if _settings.log_format == "json":
    logger_class = _JsonLogger


def post_worker_init(worker: object) -> None:
    """On SIGTERM, end responses still open just before graceful_timeout, visibly (SSE error event)."""
    import gevent

    from service.accounts.warm import keep_warm
    from service.web.pipeline.watch import drain_on_sigterm

    drain_on_sigterm(worker.wsgi, worker.cfg.graceful_timeout)
    # The door reads the pool from a snapshot this keeps fresh, so no turn pays for its refresh.
    gevent.spawn(keep_warm, worker.wsgi.extensions["accounts"], sleep=gevent.sleep)

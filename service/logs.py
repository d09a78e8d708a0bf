"""Logging set-up for entry points, and the filter that stamps ids on every record.

Only entry points call `configure_logging`; library code just uses
`logging.getLogger(__name__)`. The request id (web) and job id (worker) live in
context variables — greenlet-local under gevent — and `IdsFilter` copies them onto
each record so one grep follows a turn across processes.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
job_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("job_id", default="-")

FORMAT = "%(asctime)s %(levelname)s %(name)s request_id=%(request_id)s job_id=%(job_id)s %(message)s"


_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:@/\s]*:)[^@/\s]+@")


def redact_passwords(text: str) -> str:
    """`text` with the password of every URL in it starred out (`redis://:***@host`)."""
    return _URL_PASSWORD.sub(r"\1***@", text)


class RedactingFormatter(logging.Formatter):
    """Formats as usual, then stars out URL passwords in the whole line, traceback included.

    A Redis URL with its password can surface in a library's error message or a
    traceback's locals-free text (a connection error, a bad setting); the log line
    is the last place to catch it.
    """

    def format(self, record: logging.LogRecord) -> str:
        """The record as the base formatter renders it, with URL passwords redacted."""
        return redact_passwords(super().format(record))


class IdsFilter(logging.Filter):
    """Adds `request_id` and `job_id` attributes to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Stamp the ids of the current request or job; never drops a record."""
        record.request_id = request_id_var.get()
        record.job_id = job_id_var.get()
        return True


def configure_logging(level: str) -> None:
    """Send key=value logs to stderr at `level`, with ids stamped on each line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(FORMAT))
    handler.addFilter(IdsFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # RQ logs every job at INFO through its own handler; keep one handler, ours.
    for name in ("rq.worker", "rq.queue", "rq.job"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True

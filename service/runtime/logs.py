"""Logging set-up for entry points, and the filter that stamps ids on every record.

Only entry points call `configure_logging`; library code just uses
`logging.getLogger(__name__)`. The request id, the job (completion) id and the
conversation id live in context variables — greenlet-local under gevent — and
`IdsFilter` copies them onto each record, so one grep follows a turn across
processes: the web tier sets them per request, and the worker sets the same values
from the job payload (`TurnRequest.request_id`) before it runs the turn.

`LOG_FORMAT=json` writes one JSON object per line (`JsonFormatter`): time, level,
logger, message, the three ids, and the event's `key=value` fields (parsed from the
message, plus any `extra=`), so a log pipeline can index them without regexes.
"""

from __future__ import annotations

import contextvars
import datetime
import json
import logging
import re
import sys
from typing import Any

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
job_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("job_id", default="-")
conversation_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("conversation_id", default="-")

FORMAT = (
    "%(asctime)s %(levelname)s %(name)s request_id=%(request_id)s job_id=%(job_id)s "
    "conversation_id=%(conversation_id)s %(message)s"
)


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
        record.conversation_id = conversation_id_var.get()
        return True


def bind_turn(*, request_id: str = "", job_id: str = "", conversation_id: str = "") -> None:
    """Put a turn's ids on every later log line of this greenlet (empty = leave as is)."""
    if request_id:
        request_id_var.set(request_id)
    if job_id:
        job_id_var.set(job_id)
    if conversation_id:
        conversation_id_var.set(conversation_id)


# The password of a URL (`redis://user:PASSWORD@host`): never written, whatever the field.
_JSON_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:@/\s\"]*:)[^@/\s\"]+@")
# `key=value` pairs in a message; a value runs to the next space.
_FIELD = re.compile(r"(?<![^\s])([a-z_][a-z0-9_]*)=(\S+)")
# Attributes every LogRecord has: anything else on a record came from `extra=`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
_IDS = ("request_id", "job_id", "conversation_id")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (see the module docstring for the keys)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line; ids and fields are top-level keys."""
        message = record.getMessage()
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        for name in _IDS:
            entry[name] = getattr(record, name, "-")
        for key, value in _FIELD.findall(message):
            entry.setdefault(key, value)
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return _JSON_URL_PASSWORD.sub(r"\1***@", json.dumps(entry, ensure_ascii=False, default=str))


def configure_logging(level: str, log_format: str = "text") -> None:
    """Send logs to stderr at `level` (key=value text or JSON lines), with ids stamped on each."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(FORMAT))
    handler.addFilter(IdsFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # RQ logs every job at INFO through its own handler; keep one handler, ours.
    for name in ("rq.worker", "rq.queue", "rq.job"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True

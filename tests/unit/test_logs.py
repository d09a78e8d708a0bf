"""LOG_FORMAT=json: one JSON object per line with the ids and the event's fields."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from service.runtime.logs import (
    IdsFilter,
    JsonFormatter,
    bind_turn,
    conversation_id_var,
    job_id_var,
    request_id_var,
)
from service.runtime.settings import SettingsError, load_settings


@pytest.fixture()
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(IdsFilter())
    logger = logging.getLogger("tests.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    tokens = [var.set("-") for var in (request_id_var, job_id_var, conversation_id_var)]
    yield logger, stream
    logger.removeHandler(handler)
    for var, token in zip((request_id_var, job_id_var, conversation_id_var), tokens, strict=True):
        var.reset(token)


def test_a_json_line_has_the_ids_and_the_event_fields(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    bind_turn(request_id="req_1", job_id="chatcmpl-1", conversation_id="conv_1")
    logger.info("event=turn_done status=%s chars=%d", "ok", 42, extra={"account": 3})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["level"] == "INFO" and entry["logger"] == "tests.logs"
    assert entry["message"] == "event=turn_done status=ok chars=42"
    assert (entry["request_id"], entry["job_id"], entry["conversation_id"]) == (
        "req_1",
        "chatcmpl-1",
        "conv_1",
    )
    assert (entry["event"], entry["status"], entry["chars"], entry["account"]) == ("turn_done", "ok", "42", 3)
    assert entry["time"].endswith("+00:00")


def test_a_traceback_stays_inside_its_one_line(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        logger.exception("event=failed")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["level"] == "ERROR" and "ValueError: boom" in entry["exc_info"]
    assert entry["request_id"] == "-"  # nothing bound: the placeholder, never a stale id


def test_url_passwords_never_reach_a_json_line(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    logger.warning(
        "event=redis_down url=%s", "redis://:s3cret-pw@10.0.0.5:6379/0", extra={"dsn": "rediss://u:pw2@h"}
    )
    line = stream.getvalue()
    assert "s3cret-pw" not in line and "pw2" not in line
    entry = json.loads(line)
    assert entry["url"] == "redis://:***@10.0.0.5:6379/0" and entry["dsn"] == "rediss://u:***@h"


def test_bind_turn_leaves_unnamed_ids_alone() -> None:
    token = request_id_var.set("req_keep")
    try:
        bind_turn(conversation_id="conv_2")
        assert request_id_var.get() == "req_keep"
    finally:
        request_id_var.reset(token)
        conversation_id_var.set("-")


def test_log_format_and_metrics_port_are_parsed_strictly() -> None:
    assert load_settings({}).log_format == "text"
    assert load_settings({"LOG_FORMAT": "JSON"}).log_format == "json"
    assert load_settings({}).worker_metrics_port == 0
    assert load_settings({"WORKER_METRICS_PORT": "0"}).worker_metrics_port == 0
    assert load_settings({"WORKER_METRICS_PORT": "9100"}).worker_metrics_port == 9100
    with pytest.raises(SettingsError, match="LOG_FORMAT"):
        load_settings({"LOG_FORMAT": "xml"})
    with pytest.raises(SettingsError, match="WORKER_METRICS_PORT"):
        load_settings({"WORKER_METRICS_PORT": "70000"})

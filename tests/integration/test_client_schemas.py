"""A client's schema cannot freeze a worker (audit round 3, N2), end to end on the real stack.

The scripted model answers a structured-output request with the schema's first enum
value, here a string that makes Python's backtracking `re` run for days against the
schema's `pattern`. On RE2 the check is linear: the answer is invalid, the one repair
turn is too, and the strict request ends in the honest 502 `structured_output_invalid`
(before RE2 it ended in `worker_lost`, the worker's event loop frozen); the workers
then go on serving.
"""

from __future__ import annotations

import pytest

from tests.integration.conftest import Stack, body

EVIL = "a" * 40 + "!"
SCHEMA = {
    "type": "object",
    "properties": {"a": {"type": "string", "enum": [EVIL], "pattern": "^(a+)+$"}},
    "required": ["a"],
}


@pytest.mark.dialects("copilot", reason="the check runs in the worker, the same for both dialects")
def test_a_catastrophic_pattern_does_not_freeze_a_worker(gateway: Stack) -> None:
    response_format = {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA, "strict": True}}
    response = gateway.post(body("one word", response_format=response_format), timeout=120)
    assert response.status_code == 502, response.text
    assert response.json()["error"]["code"] == "structured_output_invalid", response.text
    for index in range(2 * len(gateway.workers)):
        served = gateway.post(body(f"hello {index}"), timeout=60)
        assert served.status_code == 200, served.text

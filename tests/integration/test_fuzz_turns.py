"""Valid fuzzed bodies are really answered: a derandomized sample through gunicorn, workers and the
simulator (the unit fuzz stops valid bodies right after validation, to run 10,000 of them quickly).
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings

from tests.integration.conftest import Stack, sse_data, sse_lines
from tests.unit.fuzz_bodies import valid_bodies


def test_valid_bodies_are_answered(gateway: Stack) -> None:
    @settings(
        max_examples=12,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(valid_bodies())
    def check(body: dict[str, Any]) -> None:
        stream = bool(body.get("stream"))
        response = gateway.post(body, stream=stream)
        assert response.status_code == 200, response.text
        if stream:
            lines = sse_lines(response)
            assert lines[-1] == "data: [DONE]", lines
            assert all("error" not in chunk for chunk in sse_data(lines) if isinstance(chunk, dict))
        else:
            assert response.json()["choices"][0]["message"]["content"]

    check()

"""`check` against the simulator: every step reported, nothing secret in the report."""

from __future__ import annotations

import json

import pytest

from service.runtime.settings import load_settings
from tests.support.simulator import SimulatorProcess
from workers.account_check import clearance_age, render, run_check
from workers.upstream import Credentials

pytestmark = pytest.mark.timeout(60)


def test_clearance_age_reads_the_issue_time_in_the_cookie() -> None:
    assert clearance_age("_U=x", 1_796_600_000) == "none"
    assert (
        clearance_age("cf_clearance=abc-1796600000-1.2.1.1-tail", 1_796_600_000 + 3 * 3600 + 5 * 60)
        == "3h05m"
    )
    assert clearance_age("cf_clearance=opaque", 0) == "unknown"


@pytest.mark.parametrize("dialect", ["copilot", "bing"])
def test_a_check_reports_each_call_and_the_first_events(sim: SimulatorProcess, dialect: str) -> None:
    settings = load_settings(
        {
            "UPSTREAM": dialect,
            "COPILOT_URL": sim.copilot_url,
            "BING_CREATE_URL": sim.create_url,
            "BING_CHATHUB_URL": sim.chathub_url,
            "REDIS_URL": "redis://127.0.0.1:1/0",
        }
    )
    secret = "cf_clearance=SECRET-1796600000-1.2.1.1-x"
    report = run_check(settings, Credentials("acc-1", cookies=f"_U=checked; {secret}"), now=1_796_600_060)
    assert report["ok"] is True, report
    assert (report["transport"], report["proxy"], report["clearance_age"]) == ("browser", False, "0h01m")
    assert report["tls_profile"].startswith("chrome")
    calls = [step for step in report["steps"] if step["step"].startswith(("GET", "POST"))]
    assert calls and all(step["status"] == 200 and step["cloudflare"] == "pass" for step in calls)
    [upgrade] = [step for step in report["steps"] if step["step"] == "websocket upgrade"]
    assert upgrade["status"] == 101 and upgrade["events"]
    assert report["steps"][-1]["step"] == "answer" and report["steps"][-1]["chars"] > 0
    assert "SECRET" not in json.dumps(report) and "checked" not in json.dumps(report)
    text = render(report)
    assert text.startswith("account acc-1") and text.endswith(
        "OK: the account bootstrapped and answered a turn"
    )

"""The first hour of a real operator (issue #17): the README's commands, run as a new user runs them.

Each test starts `python -m service.launcher` (what `deploy/start` execs) in a session of its
own and drives it with the documented tools: `deploy/admin`, curl-shaped requests (no
Content-Type), an OpenAI model name the README's client configs send.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import requests

from tests.integration.test_launcher import CLOSE, ROOT, Launcher, chat
from tests.support.stack import wait_for

ADMIN_KEY = "admin-key-0123456789abcdef"


def deploy_admin(data_dir: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """`deploy/admin …` as an operator types it: no REDIS_URL, no SECRET_KEY in the environment."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REDIS_", "SECRET_KEY", "DATA_DIR", "API_KEYS", "ADMIN_KEY", "UPSTREAM"))
    }
    env["DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [str(ROOT / "deploy" / "admin"), *argv], env=env, capture_output=True, text=True, timeout=60
    )


def test_a_real_account_start_needs_no_secret_key_and_the_clis_find_its_redis(tmp_path: Path) -> None:
    # Items 1, 2, 3, 5, 7: cookies and an admin key given, no SECRET_KEY; the bing dialect with
    # the README's `model: "copilot"`; admin calls without a Content-Type; many quick turns.
    data_dir = tmp_path / "data"
    launcher = Launcher(data_dir, UPSTREAM="bing", UPSTREAM_COOKIES="_U=my-account", ADMIN_KEY=ADMIN_KEY)
    try:
        launcher.wait_ready()
        [banner] = [line for line in launcher.output.splitlines() if "gateway ready" in line]
        assert "account limits lifted" in banner and "ACCOUNT_RPM=10000" in banner
        # Item 2: the CLIs reach the launcher's Redis (and SECRET_KEY) with nothing set.
        listed = deploy_admin(data_dir, "list")
        assert listed.returncode == 0, listed.stderr
        assert [a["id"] for a in json.loads(listed.stdout)] == ["env-1"]
        assert listed.stderr.count("\n") == 1 and "using the Redis that deploy/start runs" in listed.stderr
        created = deploy_admin(data_dir, "keys", "create", "--label", "laptop")
        assert created.returncode == 0, created.stderr
        assert "runs open" not in created.stderr  # the launcher's gateway is keyed (its ADMIN_KEY)
        key = json.loads(created.stdout)["key"]

        # Item 5: the demo's one account answers many quick turns (it stopped at the 13th/16th).
        for number in range(20):
            answer = requests.post(
                f"{launcher.url}/v1/chat/completions",
                json={"model": "copilot", "messages": [{"role": "user", "content": f"quick {number}"}]},
                headers={"Authorization": f"Bearer {key}", **CLOSE},
                timeout=60,
            )
            assert answer.status_code == 200, answer.text  # item 7: "copilot" under UPSTREAM=bing

        # Item 3: the README's admin curl sends `-d` (form content type) and no JSON header.
        headers = {"Authorization": f"Bearer {ADMIN_KEY}", **CLOSE}
        added = requests.post(
            f"{launcher.url}/admin/accounts",
            data='{"cookies": "_U=second", "label": "second"}',
            headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
            timeout=10,
        )
        assert added.status_code == 201, added.text
        assert added.json()["label"] == "second"
        refused = requests.post(
            f"{launcher.url}/admin/keys", data="label=x", headers={**headers, "Content-Type": "text/plain"}
        )
        assert refused.status_code == 400
        assert "Content-Type: text/plain" in refused.json()["error"]["message"]
    finally:
        assert launcher.stop() == 0, launcher.output
    assert "SECRET_KEY is required" not in launcher.output
    assert (data_dir / "secret_key").exists()
    # Stopped: the file the CLIs read is gone, and they say how to get a Redis.
    assert not (data_dir / "redis.json").exists()
    gone = deploy_admin(data_dir, "list")
    assert gone.returncode == 2
    assert "set REDIS_URL" in gone.stderr and "deploy/start" in gone.stderr


def test_an_unreachable_upstream_fails_readiness_with_one_warning_per_turn(tmp_path: Path) -> None:
    # Items 1, 8, 9: a real-account start (no --demo) whose upstream cannot be reached.
    from service.runtime.embedded_redis import free_port

    closed = f"http://127.0.0.1:{free_port()}"
    launcher = Launcher(
        tmp_path / "data",
        demo=False,
        COPILOT_URL=closed,
        UPSTREAM_COOKIES="_U=bogus",
        UPSTREAM_CONNECT_TIMEOUT="2",
    )
    try:
        launcher.wait_ready()
        readyz = f"{launcher.url}/readyz"
        wait_for(lambda: requests.get(readyz, headers=CLOSE, timeout=5).status_code == 200, timeout=30)
        for _ in range(3):
            failed = chat(launcher.url, "hello")
            assert failed.status_code == 502, failed.text
            assert failed.json()["error"]["code"] == "upstream_unreachable"
            assert "X-Conversation-Id" not in failed.headers  # item 10: nothing was kept
        ready = requests.get(readyz, headers=CLOSE, timeout=5)
        assert ready.status_code == 503, ready.text
        assert ready.json()["checks"]["accounts"]["states"] == {"env-1": "unreachable"}
        refused = chat(launcher.url, "hello again")
        assert refused.status_code == 503, refused.text
        message = refused.json()["error"]["message"]
        assert "env-1 (no label) is unreachable" in message and "cannot connect" in message
    finally:
        assert launcher.stop() == 0, launcher.output
    output = launcher.output
    assert "SECRET_KEY is required" not in output
    assert "Traceback" not in output, output
    failures = [line for line in output.splitlines() if "event=turn_failed" in line]
    assert len(failures) == 4, output
    assert all("WARNING" in line and "error_class=" in line and "job_id=" in line for line in failures), (
        failures
    )

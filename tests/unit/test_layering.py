"""The tiers stay apart: no Flask in the worker, no websocket code in the web tier.

Each check imports a tier in a fresh interpreter and looks at what got loaded, so an
import added anywhere in the chain is caught.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED = [
    "service.settings",
    "service.errors",
    "service.turns",
    "service.relay",
    "service.conversations",
    "service.locks",
    "service.idempotency",
    "service.models",
    "service.priming",
    "service.tokens",
    "service.limits",
    "service.redis_conn",
    "service.logs",
    "service.keys",
    "service.ratelimit",
    "service.keys_cli",
]


def loaded_after_importing(*modules: str) -> set[str]:
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules) + "print('\\n'.join(sys.modules))"
    env = dict(os.environ, REDIS_URL="redis://127.0.0.1:1/0")
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return {name.split(".")[0] for name in out.stdout.split()}


@pytest.mark.parametrize(
    ("modules", "forbidden"),
    [
        (SHARED, {"flask", "werkzeug", "websocket", "websockets", "gevent"}),
        (["workers.jobs", "workers.main", "workers.upstream.bing"], {"flask", "werkzeug"}),
        (["service.web", "wsgi"], {"websocket", "websockets", "workers"}),
    ],
    ids=["shared", "worker", "web"],
)
def test_tiers_do_not_import_each_other(modules: list[str], forbidden: set[str]) -> None:
    assert loaded_after_importing(*modules) & forbidden == set()


def test_nothing_connects_at_import() -> None:
    # A closed port: importing (and building the app) must not try to reach it.
    code = (
        "import os; os.environ['REDIS_URL'] = 'redis://127.0.0.1:1/0'\n"
        "import wsgi, workers.jobs, workers.main\n"
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"

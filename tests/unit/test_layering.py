"""The tiers stay apart: no Flask in the worker, no websocket code in the web tier.

Each check imports a tier in a fresh interpreter and looks at what got loaded, so an
import added anywhere in the chain is caught.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED = [
    "service.runtime.settings",
    "service.runtime.settings_fields",
    "service.runtime.settings_parsers",
    "service.runtime.settings_checks",
    "service.errors",
    "service.turns",
    "service.state.relay",
    "service.state.relay_publisher",
    "service.state.relay_hub",
    "service.state.relay_subscription",
    "service.state.conversations",
    "service.state.locks",
    "service.state.idempotency",
    "service.models",
    "service.priming",
    "service.tokens",
    "service.limits",
    "service.runtime.redis_conn",
    "service.runtime.logs",
    "service.access.keys",
    "service.access.key_limits",
    "service.access.ratelimit",
    "service.access.key_usage",
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
        (["workers.jobs", "workers.main", "workers.upstream.chathub_client"], {"flask", "werkzeug"}),
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


# -- inside the web tier: the packages of service/web tell one request's story ----------

WEB = ROOT / "service" / "web"
SURFACES = ("chat", "completions", "responses", "messages", "images")
UPSTREAM = ("workers", "websocket", "websockets", "requests", "urllib3")


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, with `from pkg import mod` resolved to `pkg.mod` where it is one."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _package_imports(package: str) -> dict[str, set[str]]:
    return {
        str(path.relative_to(ROOT)): _imports(path)
        for path in sorted((WEB / package).rglob("*.py") if package else WEB.rglob("*.py"))
    }


def _offenders(imports: dict[str, set[str]], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{module} imports {name}"
        for module, names in imports.items()
        for name in names
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    )


@pytest.mark.parametrize("surface", SURFACES)
def test_surfaces_never_import_each_other(surface: str) -> None:
    others = tuple(f"service.web.{other}" for other in SURFACES if other != surface)
    assert _offenders(_package_imports(surface), others) == []


def test_the_pipeline_imports_no_surface() -> None:
    surfaces = tuple(f"service.web.{name}" for name in (*SURFACES, "admin", "conversations"))
    assert _offenders(_package_imports("pipeline"), surfaces) == []


def test_the_web_tier_imports_nothing_that_talks_to_the_upstream() -> None:
    assert _offenders(_package_imports(""), UPSTREAM) == []


def test_the_rules_see_imports() -> None:
    # The walker itself: a rule that can never fire proves nothing.
    imports = _package_imports("chat")
    assert any(name.startswith("service.web.pipeline") for names in imports.values() for name in names)

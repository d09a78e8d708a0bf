"""`check`: one account's bootstrap and one short real turn, told step by step (no secret in it).

What an operator runs first when an account misbehaves (`python -m service.admin check ID`,
`POST /admin/accounts/{id}/check`). The account's own client runs as in a turn, through a
recording wrapper around its transport, so the report shows what the upstream saw and said:

    transport      plain/browser, the TLS profile (curl_cffi target), the UA's browser, proxy or not
    each call      method and path, HTTP status, Cloudflare's verdict (pass / challenge / blocked)
    socket         the upgrade's outcome, the first events the server sent (names only)
    challenge      the challenge type when the upstream asked for one (Turnstile, hashcash, …)
    clearance      the age of the `cf_clearance` cookie (its issue time is in its value)
    result         ok, or the error's code and message (messages carry no secrets)
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from redis import Redis

from service.accounts import health
from service.runtime.settings import Settings
from workers.upstream import Credentials, account_transport, build_client
from workers.upstream.cloudflare import verdict
from workers.upstream.context import TurnInput
from workers.upstream.copilot_browser import parse_cookie_header
from workers.upstream.errors import UpstreamError
from workers.upstream.events import Done
from workers.upstream.wire import Reply, Socket, Transport

PROMPT = "Reply with the single word OK."
MAX_EVENTS = 6


class _RecordingSocket:
    """A socket that notes the upgrade's outcome and the names of the first events received."""

    def __init__(self, inner: Socket, steps: list[dict[str, Any]]) -> None:
        self._inner = inner
        self._steps = steps
        self._events: list[str] = []

    def open(self, url: str, *, headers: Mapping[str, str], timeout: float) -> None:
        step: dict[str, Any] = {"step": "websocket upgrade", "path": urlsplit(url).path}
        self._steps.append(step)
        try:
            self._inner.open(url, headers=headers, timeout=timeout)
        except UpstreamError as exc:
            step.update(status="refused", error=getattr(exc, "code", "upstream_error"))
            if getattr(exc, "code", "") == "upstream_challenge_required":
                step["cloudflare"] = "challenge"
            raise
        step.update(status=101, cloudflare="pass", events=self._events)

    def send(self, text: str) -> None:
        self._inner.send(text)

    def recv(self, timeout: float) -> str | None:
        message = self._inner.recv(timeout)
        if message is not None and len(self._events) < MAX_EVENTS:
            for line in message.split("\x1e"):
                with contextlib.suppress(ValueError, AttributeError):
                    event = json.loads(line)
                    name = event.get("event") or event.get("type")
                    if name == "challenge":
                        self._steps.append({"step": "challenge", "method": event.get("method") or "null"})
                    self._events.append(str(name))
        return message

    def idle(self) -> bool:
        return self._inner.idle()

    def close(self) -> None:
        self._inner.close()


class _RecordingTransport:
    """The account's transport, noting each call's status and Cloudflare verdict."""

    def __init__(self, inner: Transport, steps: list[dict[str, Any]]) -> None:
        self._inner = inner
        self._steps = steps
        self.name = inner.name
        self.identity = inner.identity

    @property
    def profile(self) -> str:
        return self._inner.profile

    def request(self, method: str, url: str, **options: Any) -> Reply:
        reply = self._inner.request(method, url, **options)
        self._steps.append(
            {
                "step": f"{method} {urlsplit(url).path or '/'}",
                "status": reply.status,
                "cloudflare": verdict(reply.status, reply.headers, reply.body),
            }
        )
        return reply

    def socket(self) -> Socket:
        return _RecordingSocket(self._inner.socket(), self._steps)


def clearance_age(cookies: str, now: float) -> str:
    """How old the account's `cf_clearance` is ("none" when it has none, "unknown" when unreadable)."""
    value = parse_cookie_header(cookies).get("cf_clearance", "")
    if not value:
        return "none"
    for part in value.split("-"):
        if part.isdigit() and len(part) == 10:
            seconds = max(0, int(now - int(part)))
            return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return "unknown"


def run_check(
    settings: Settings,
    account: Credentials,
    *,
    now: float | None = None,
    on_cookies: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The account's bootstrap and one short turn; the report of every step (see the module docstring)."""
    steps: list[dict[str, Any]] = []
    transport = _RecordingTransport(account_transport(settings, account), steps)
    family = transport.identity.summary()["user_agent"]
    report: dict[str, Any] = {
        "account": account.id,
        "upstream": settings.upstream,
        "transport": transport.name,
        "tls_profile": transport.profile,
        "user_agent": family,
        "proxy": bool(account.proxy),
        "clearance_age": clearance_age(account.cookies, time.time() if now is None else now),
        "steps": steps,
    }
    client = build_client(settings, account, transport=transport, on_cookies=on_cookies)
    try:
        handle = client.create_conversation(account=account.id)
        first = None
        for event in client.stream_turn(handle, TurnInput(PROMPT, mode="chat"), should_stop=lambda: False):
            first = first or type(event).__name__
            if isinstance(event, Done):
                steps.append({"step": "answer", "first_event": first, "chars": len(event.text)})
                break
    except UpstreamError as exc:
        report.update(ok=False, error={"code": getattr(exc, "code", "upstream_error"), "message": str(exc)})
        return report
    report["ok"] = True
    return report


def render(report: Mapping[str, Any]) -> str:
    """The report as lines for a terminal."""
    lines = [
        f"account {report['account']} ({report['upstream']}): transport {report['transport']}, "
        f"TLS profile {report['tls_profile']}, user agent {report['user_agent']}, "
        f"proxy {'yes' if report['proxy'] else 'no'}, cf_clearance age {report['clearance_age']}"
    ]
    for step in report["steps"]:
        details = ", ".join(f"{key} {value}" for key, value in step.items() if key != "step")
        lines.append(f"  {step['step']}: {details}")
    if report.get("ok"):
        lines.append("OK: the account bootstrapped and answered a turn")
    else:
        error = report.get("error") or {}
        lines.append(f"FAILED ({error.get('code')}): {error.get('message')}")
    return "\n".join(lines)


def check_pool_account(settings: Settings, redis: Redis, account_id: str) -> dict[str, Any]:
    """`run_check` for one account of the pool; its health follows the result (a pass ends attention)."""
    from workers.account_pool import pool_for

    pool = pool_for(settings, redis)
    account = pool.registry.get(account_id)
    report = run_check(settings, pool.credentials(account), on_cookies=pool.cookie_sink(account_id))
    if report["ok"]:
        if account.attention:
            health.recover(pool.registry, account_id)
    else:
        verdict_ = health.classify(_Failure(report["error"]["code"], report["error"]["message"]))
        if verdict_ is not None:
            health.record(pool.registry, account_id, verdict_, time.time())
    return report


class _Failure(Exception):
    """An error of the report, as `health.classify` reads it (by its code)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

"""HTTP side of the Cloudflare gate (`cloudflare`): screening requests, the pass page, its `/_sim` API.

`control.Routes` calls `screen` first for every request that is not `/_sim/*` (REST and
websocket upgrades of both dialects, on both ports), and `control` first for `/_sim/*`.

Control API:

- `POST /_sim/config {"cloudflare": {...}}` — the gate's settings (`Gate.parse_config`),
  alongside or instead of the ordinary config keys; `GET /_sim/config` shows them.
- `GET /_sim/cloudflare` — settings, `challenged` / `passed` / `issued`, `last_reason`,
  `reasons` (counts), `by_account` (the same per account, `accounts.account_of` names),
  `events` (the recent verdicts: kind, path, account, verdict, reason, detail, ja4,
  user_agent, client).
- `POST /_sim/clearance {"ja4", "user_agent", "client"}` — a clearance as if that
  identity had passed the check: `{"cf_clearance": token, "expires_at": epoch}`.
- `GET /_sim/tls` — every TLS connection's ClientHello summary (`tls_hello.TlsLog`).
"""

from __future__ import annotations

import email.utils
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from tests.simulator.cloudflare import COOKIE, PASS_PATH, Gate, Identity
from tests.simulator.http_util import challenge_page, cookies, json_response
from tests.simulator.state import SimulatorState


def identity(connection: ServerConnection, request: Request) -> Identity:
    """What the gate sees of a request: its connection's ClientHello, UA, hints and peer address."""
    hello = getattr(connection, "client_hello", None)
    peer = connection.remote_address
    hints = {
        name.lower(): value
        for name, value in request.headers.raw_items()
        if name.lower().startswith("sec-ch-ua")
    }
    return Identity(
        ja4=hello.ja4() if hello is not None else None,
        user_agent=request.headers.get("User-Agent", ""),
        hints=hints,
        client=str(peer[0]) if peer else "",
    )


def screen(
    state: SimulatorState, connection: ServerConnection, request: Request, account: str
) -> Response | None:
    """The gate's answer to a non-`/_sim` request: a challenge, the pass page, or None (go on)."""
    gate: Gate = state.cloudflare
    path = request.path.split("?", 1)[0]
    if path == PASS_PATH:
        return sim_pass(gate, identity(connection, request), account)
    if not gate.enabled:
        return None
    who = identity(connection, request)
    kind = "upgrade" if request.headers.get("Upgrade", "").lower() == "websocket" else "rest"
    verdict = gate.judge(who, cookies(request.headers).get(COOKIE))
    gate.record(who, account, kind, path, verdict)
    return challenge_page(gate.status) if verdict else None


def sim_pass(gate: Gate, who: Identity, account: str) -> Response:
    """`GET /cdn-cgi/challenge-platform/sim-pass`: a browser that passes the check gets `cf_clearance`."""
    verdict = gate.browser_problem(who)
    gate.record(who, account, "sim-pass", PASS_PATH, verdict)
    if verdict is not None or who.ja4 is None:
        return challenge_page(gate.status)
    clearance = gate.issue(who.ja4, who.user_agent, who.client)
    expires = email.utils.formatdate(clearance.expires_at, usegmt=True)
    cookie = f"{COOKIE}={clearance.token}; Path=/; Expires={expires}; Secure; HttpOnly; SameSite=None"
    return json_response(200, {"ok": True, "expires_at": clearance.expires_at}, [("Set-Cookie", cookie)])


def secure_cookies(response: Response) -> None:
    """Mark every `Set-Cookie` of a TLS response `Secure` (a `__Host-` cookie is refused without it)."""
    values = response.headers.get_all("Set-Cookie")
    if not values:
        return
    del response.headers["Set-Cookie"]
    for value in values:
        secure = any(part.strip().lower() == "secure" for part in value.split(";"))
        response.headers["Set-Cookie"] = value if secure else f"{value}; Secure"


def control(state: SimulatorState, method: str, name: str, values: dict[str, Any]) -> Response | None:
    """The gate's `/_sim` endpoints; None for every other one (`values` loses a "cloudflare" key)."""
    gate: Gate = state.cloudflare
    if method == "GET" and name == "tls":
        return json_response(200, state.tls_log.as_json())
    if method == "GET" and name == "cloudflare":
        return json_response(200, gate.as_json())
    if method == "POST" and name == "clearance":
        fields = {key: values.get(key) for key in ("ja4", "user_agent", "client")}
        missing = [key for key, value in fields.items() if not isinstance(value, str) or not value]
        if missing:
            return json_response(400, {"error": f"clearance needs non-empty strings: {', '.join(missing)}"})
        clearance = gate.issue(fields["ja4"], fields["user_agent"], fields["client"])  # type: ignore[arg-type]
        return json_response(200, {COOKIE: clearance.token, "expires_at": clearance.expires_at})
    if method == "POST" and name == "config" and "cloudflare" in values:
        try:
            parsed = gate.parse_config(values.pop("cloudflare"))
            state.config.update(values)
        except ValueError as exc:
            return json_response(400, {"error": str(exc)})
        gate.apply(parsed)
        return json_response(200, {**state.config.as_json(), "cloudflare": gate.config_json()})
    return None

"""A Cloudflare bot gate in front of both dialects, and the `cf_clearance` cookies it issues.

The real upstream sits behind Cloudflare, which answers a client it does not trust with a
managed challenge: HTTP 403, `cf-mitigated: challenge`, an HTML "Just a moment..." page,
on REST calls and on the websocket upgrade alike (upstream-protocols.md B5b [S]). A
`cf_clearance` cookie lets a client through, but only the client that earned it: it is
bound to the User-Agent, the client hints and the TLS fingerprint (Windows-Copilot-API PR
#28, #35 [S]) and, operators report, the client's IP address (issue #15).

Off by default; `POST /_sim/config {"cloudflare": {"enabled": true, "require_clearance":
false, "require_hints": false, "clearance_ttl": 1800, "status": 403}}` turns it on (`status` 503 is the other
answer Cloudflare gives). When on, every request but `/_sim/*` is
judged, in this order, and the first failure is the `reason` of a challenge:

- `not-a-browser` — plain HTTP, or a TLS fingerprint that is no known browser's
  (`browsers.FINGERPRINTS`; Python's `ssl` is not one);
- `ua-mismatch` — the User-Agent names no browser, another browser family than the
  fingerprint's, or a major version far from it;
- `hints-mismatch` — `Sec-CH-UA*` hints contradict the UA (`browsers.hints_problem`), or
  a Chromium UA comes without any while `require_hints` is on (off by default);
- `clearance-invalid` / `clearance-expired` — a `cf_clearance` this process never issued,
  or past its lifetime;
- `clearance-other-identity` — a `cf_clearance` issued to another (JA4, User-Agent, client
  address); JA4s compare as one browser's (`browsers.same_browser`: the SNI flag ignored,
  a profile's REST and websocket fingerprints alike);
- `no-clearance` — none at all while `require_clearance` is on.

Clearance is earned at `GET /cdn-cgi/challenge-platform/sim-pass` (the first three checks
must pass; the gate need not be on) or granted by `POST /_sim/clearance`. Every verdict is
counted, per account too, for `GET /_sim/cloudflare`. Pure but for the clock: no I/O.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import secrets
from collections.abc import Callable, Mapping
from typing import Any

from tests.simulator import browsers

log = logging.getLogger(__name__)

PASS_PATH = "/cdn-cgi/challenge-platform/sim-pass"
COOKIE = "cf_clearance"
CLEARANCE_TTL = 1800.0
"""Default clearance lifetime in seconds (Cloudflare's default Challenge Passage is 30 minutes)."""
EVENTS_KEPT = 200
KEYS = ("enabled", "require_clearance", "require_hints", "clearance_ttl", "status")
"""The gate's settings (`POST /_sim/config {"cloudflare": {...}}`)."""
REASONS = (
    "not-a-browser",
    "ua-mismatch",
    "hints-mismatch",
    "clearance-invalid",
    "clearance-expired",
    "clearance-other-identity",
    "no-clearance",
)


@dataclasses.dataclass(frozen=True)
class Identity:
    """What the gate sees of one request: TLS fingerprint (None on plain HTTP), UA, hints, address."""

    ja4: str | None
    user_agent: str
    hints: Mapping[str, str]
    client: str


@dataclasses.dataclass(frozen=True)
class Clearance:
    """One issued `cf_clearance` and the identity it is bound to."""

    token: str
    ja4: str
    user_agent: str
    client: str
    expires_at: float


@dataclasses.dataclass
class Tally:
    """Counters for one account (or all): challenges, passes and the last reason."""

    challenged: int = 0
    passed: int = 0
    last_reason: str | None = None
    reasons: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)

    def count(self, reason: str | None) -> None:
        if reason is None:
            self.passed += 1
            return
        self.challenged += 1
        self.last_reason = reason
        self.reasons[reason] += 1

    def as_json(self) -> dict[str, Any]:
        return {
            "challenged": self.challenged,
            "passed": self.passed,
            "last_reason": self.last_reason,
            "reasons": dict(self.reasons),
        }


class Gate:
    """The gate's settings, issued clearances and counters (one per simulator state)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.enabled = False
        self.require_clearance = False
        self.require_hints = False
        """A Chromium UA must come with `Sec-CH-UA` (real Chromium always sends it over HTTPS)."""
        self.clearance_ttl = CLEARANCE_TTL
        self.status = 403
        """HTTP status of a challenge: 403, or 503 (Cloudflare answers either, B5b)."""
        self.clearances: dict[str, Clearance] = {}
        self.total = Tally()
        self.by_account: dict[str, Tally] = {}
        self.issued = 0
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=EVENTS_KEPT)

    # -- settings ---------------------------------------------------------------------

    @staticmethod
    def parse_config(values: Any) -> dict[str, Any]:
        """Validate a `"cloudflare"` config object (ValueError naming the bad key)."""
        if not isinstance(values, dict):
            raise ValueError("cloudflare must be an object")
        parsed: dict[str, Any] = {}
        for key, value in values.items():
            if key in ("enabled", "require_clearance", "require_hints"):
                if not isinstance(value, bool):
                    raise ValueError(f"cloudflare.{key} must be true or false")
                parsed[key] = value
            elif key == "status":
                if isinstance(value, bool) or not isinstance(value, int) or value not in (403, 503):
                    raise ValueError("cloudflare.status must be 403 or 503")
                parsed[key] = value
            elif key == "clearance_ttl":
                if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                    raise ValueError("cloudflare.clearance_ttl must be a positive number of seconds")
                parsed[key] = float(value)
            else:
                raise ValueError(f"unknown cloudflare key {key!r}; allowed: {', '.join(KEYS)}")
        return parsed

    def apply(self, parsed: dict[str, Any]) -> None:
        """Apply values `parse_config` accepted."""
        for key, value in parsed.items():
            setattr(self, key, value)

    def config_json(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "require_clearance": self.require_clearance,
            "require_hints": self.require_hints,
            "clearance_ttl": self.clearance_ttl,
            "status": self.status,
        }

    # -- judging ----------------------------------------------------------------------

    def browser_problem(self, who: Identity) -> tuple[str, str] | None:
        """(reason, detail) when the request is not a consistent browser, else None."""
        if who.ja4 is None:
            return "not-a-browser", "plain HTTP (no TLS)"
        agent = browsers.parse_user_agent(who.user_agent)
        if browsers.fingerprint_browser(who.ja4) is None:
            return "not-a-browser", f"TLS fingerprint {who.ja4} is no known browser's"
        problem = browsers.ua_problem(agent, who.ja4)
        if problem is not None:
            return "ua-mismatch", problem
        assert agent is not None  # ua_problem refuses a UA that names no browser
        problem = browsers.hints_problem(agent, who.hints)
        if problem is None and self.require_hints and agent.engine == browsers.CHROMIUM and not who.hints:
            problem = f"a {agent.browser} User-Agent without client hints"
        if problem is not None:
            return "hints-mismatch", problem
        return None

    def clearance_problem(self, who: Identity, token: str | None) -> tuple[str, str] | None:
        """(reason, detail) when the clearance cookie does not let `who` through, else None."""
        if token is None:
            if self.require_clearance:
                return "no-clearance", "no cf_clearance cookie"
            return None
        clearance = self.clearances.get(token)
        if clearance is None:
            return "clearance-invalid", "cf_clearance was not issued here"
        if self.clock() >= clearance.expires_at:
            return "clearance-expired", "cf_clearance has expired"
        differs = [
            name
            for name, same in (
                (
                    "tls fingerprint",
                    who.ja4 is not None and browsers.same_browser(clearance.ja4, who.ja4),
                ),
                ("user-agent", clearance.user_agent == who.user_agent),
                ("client address", clearance.client == who.client),
            )
            if not same
        ]
        if differs:
            return "clearance-other-identity", "cf_clearance was issued to another " + ", ".join(differs)
        return None

    def judge(self, who: Identity, token: str | None) -> tuple[str, str] | None:
        """The gate's verdict on one request: None to let it through, else (reason, detail)."""
        return self.browser_problem(who) or self.clearance_problem(who, token)

    def record(
        self, who: Identity, account: str, kind: str, path: str, verdict: tuple[str, str] | None
    ) -> None:
        """Count one verdict (overall and for `account`) and keep it in the recent events."""
        reason = verdict[0] if verdict else None
        self.total.count(reason)
        self.by_account.setdefault(account, Tally()).count(reason)
        self.events.append(
            {
                "at": self.clock(),
                "kind": kind,
                "path": path,
                "account": account,
                "verdict": "challenge" if verdict else "pass",
                "reason": reason,
                "detail": verdict[1] if verdict else None,
                "ja4": who.ja4,
                "user_agent": who.user_agent,
                "client": who.client,
            }
        )
        if verdict:
            log.info("event=cloudflare_challenge kind=%s reason=%s path=%s", kind, reason, path)

    # -- clearance --------------------------------------------------------------------

    def issue(self, ja4: str, user_agent: str, client: str) -> Clearance:
        """A fresh `cf_clearance` bound to (ja4, user_agent, client)."""
        now = self.clock()
        for stale in [t for t, c in self.clearances.items() if c.expires_at <= now - self.clearance_ttl]:
            del self.clearances[stale]  # long expired: "clearance-expired" has had its time to be seen
        token = f"{secrets.token_urlsafe(32)}-{int(now)}-1.2.1.1-{secrets.token_urlsafe(96)}"
        clearance = Clearance(token, ja4, user_agent, client, now + self.clearance_ttl)
        self.clearances[token] = clearance
        self.issued += 1
        return clearance

    def as_json(self) -> dict[str, Any]:
        """`GET /_sim/cloudflare`: settings, counters (overall and per account), recent verdicts."""
        return {
            **self.config_json(),
            **self.total.as_json(),
            "issued": self.issued,
            "by_account": {name: tally.as_json() for name, tally in self.by_account.items()},
            "events": list(self.events),
        }

"""Account health: what an upstream failure says about the account, and how it recovers.

    ready            takes turns
    cooling          until a time: throttled (`retry_after` / nextAvailableAt), a create 404;
                     ends by itself
    needs_attention  CAPTCHA, Cloudflare/Turnstile, unauthorized, region, expired token; keeps
                     the operator message; ends on a refresh through the admin API (new
                     cookies/token) or a successful periodic probe
    unreachable      UNREACHABLE_AFTER connection failures (refused, DNS, no route) within
                     UNREACHABLE_WINDOW seconds: the upstream, not the account, is the problem;
                     ends on a successful periodic probe or a refresh
    disabled         by the operator

Failures are read by their `code` / `retry_after` attributes (the contract of
`workers.upstream.errors`), so this plain module never imports worker code.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from redis import Redis

from service.accounts.account import NEEDS_ATTENTION, UNREACHABLE, Account
from service.accounts.registry import Registry
from service.runtime.redis_conn import HashFields

log = logging.getLogger(__name__)

COOLING_CODES = frozenset({"rate_limit_exceeded", "upstream_create_not_found"})
ATTENTION_CODES = frozenset(
    {
        "upstream_account_error",
        "upstream_captcha_required",
        "upstream_challenge_required",
        "upstream_unauthorized",
        "upstream_region_unavailable",
        "upstream_token_expired",
    }
)
DEFAULT_COOLING_SECONDS = 60.0
UNREACHABLE_CODE = "upstream_unreachable"
UNREACHABLE_AFTER = 3  # connection failures in a row (within the window) before the account is marked
UNREACHABLE_WINDOW = 120  # seconds


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What a failure means for the account: `cooling` for some seconds, or `attention`."""

    kind: str  # "cooling" | "attention" | "unreachable"
    code: str
    message: str
    seconds: float = 0.0


def classify(exc: BaseException) -> Verdict | None:
    """The account-level meaning of an upstream failure, or None if it is the turn's own."""
    code = str(getattr(exc, "code", "") or "")
    if code in COOLING_CODES:
        seconds = getattr(exc, "retry_after", None) or DEFAULT_COOLING_SECONDS
        return Verdict("cooling", code, str(exc), float(seconds))
    if code in ATTENTION_CODES:
        return Verdict("attention", code, str(exc))
    if code == UNREACHABLE_CODE:
        return Verdict("unreachable", code, str(exc))
    return None


def connection_failed(registry: Registry, account_id: str, verdict: Verdict, now: float) -> bool:
    """Count a connection failure; mark the account `unreachable` at the UNREACHABLE_AFTERth (True)."""
    key = f"{registry.prefix}:unreachable:{account_id}"
    with registry.redis.pipeline() as pipe:
        pipe.incr(key)
        pipe.expire(key, UNREACHABLE_WINDOW)
        failures = int(pipe.execute()[0])
    if failures < UNREACHABLE_AFTER:
        log.warning("event=upstream_connection_failed account=%s failures=%d", account_id, failures)
        return False
    registry.redis.delete(key)
    message = (
        f"{verdict.message} ({failures} times in a row): check the network and the upstream URL "
        "(COPILOT_URL / BING_*_URL); the account is probed every ACCOUNT_PROBE_SECONDS and comes back "
        "by itself once the upstream answers"
    )
    record(registry, account_id, Verdict("unreachable", verdict.code, message), now)
    return True


def record(registry: Registry, account_id: str, verdict: Verdict, now: float) -> None:
    """Move the account to cooling or needs_attention, keeping the operator message."""
    fields: HashFields = {"error_code": verdict.code, "error_message": verdict.message, "error_at": repr(now)}
    if verdict.kind == "cooling":
        fields["cooling_until"] = repr(now + verdict.seconds)
    elif verdict.kind == "unreachable":
        fields["unreachable"] = "1"
    else:
        fields["attention"] = "1"
    registry.set_health(account_id, fields)
    log.warning(
        "event=account_%s account=%s code=%s seconds=%.0f",
        verdict.kind,
        account_id,
        verdict.code,
        verdict.seconds,
    )


def recover(registry: Registry, account_id: str) -> None:
    """Back to ready: a probe succeeded."""
    registry.set_health(account_id, {}, clear=("attention", "unreachable", "cooling_until"))
    log.info("event=account_recovered account=%s", account_id)


def probe_once(
    redis: Redis,
    registry: Registry,
    probe: Callable[[Account], None],
    *,
    every: float,
    now: float,
) -> int:
    """Probe every account needing attention, if no other worker is doing it; returns how many recovered.

    `probe(account)` is a cheap REST call (never a chat turn) that raises on failure. One
    prober across all workers: the round is claimed with SET NX for `every` seconds.
    """
    if not redis.set(f"{registry.prefix}:probe", b"1", nx=True, ex=max(1, int(every))):
        return 0
    recovered = 0
    for account in registry.all(fresh=True):
        if account.state(now) not in (NEEDS_ATTENTION, UNREACHABLE):
            continue
        try:
            probe(account)
        except Exception as exc:  # still broken: the state and its message stay as they are
            # (writing here could undo a refresh the operator made while the probe ran)
            log.info("event=account_probe_failed account=%s code=%s", account.id, getattr(exc, "code", ""))
            continue
        recover(registry, account.id)
        recovered += 1
    return recovered

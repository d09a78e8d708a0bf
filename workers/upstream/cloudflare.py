"""Cloudflare's answer to a client it does not clear, recognised wherever it comes (B5b).

Cloudflare answers a request whose identity it does not trust with HTTP 403 (sometimes
503), the header `cf-mitigated: challenge` and an HTML "Just a moment…" page; on REST calls
and on the websocket upgrade alike. No client can pass it: it needs the real browser. So
the account moves to `needs_attention` (`ChallengeRequired`) with what the operator must do,
and the turn fails over to another account.
"""

from __future__ import annotations

from collections.abc import Mapping

from workers.upstream.errors import ChallengeRequired

OPERATOR_HINT = (
    "open the upstream in the browser whose identity the account uses (same machine, same network as "
    "its proxy), pass the check, copy any request to the upstream as cURL (developer tools, Network tab), "
    'and refresh the account with it: PATCH /admin/accounts/{id} {"curl": …} or '
    "python -m service.admin refresh ID --from-curl FILE"
)
_INTERSTITIAL = (b"Just a moment...", b"Just a moment&#8230;", "Just a moment…".encode(), b"cf-chl-")


def header(headers: Mapping[str, str], name: str) -> str:
    """One header's value, whatever the case of its name ("" when absent)."""
    return next((value for key, value in headers.items() if key.lower() == name), "")


def verdict(status: int, headers: Mapping[str, str], body: bytes = b"") -> str:
    """`challenge` (Cloudflare wants a browser check), `blocked` (403 from Cloudflare), or `pass`."""
    if header(headers, "cf-mitigated").lower() == "challenge":
        return "challenge"
    if status in (403, 429, 503) and any(marker in body[:65536] for marker in _INTERSTITIAL):
        return "challenge"
    if status == 403 and header(headers, "server").lower() == "cloudflare":
        return "blocked"
    return "pass"


def challenge_error(status: int, where: str, account: str = "") -> ChallengeRequired:
    """The operator's message for a challenge at `where`."""
    who = f"account {account}" if account else "this account"
    return ChallengeRequired(
        f"Cloudflare challenged {where} (HTTP {status}) for {who}: clearance required — the cf_clearance "
        "cookie is missing, expired, or was earned by another identity (browser, TLS fingerprint, address); "
        f"{OPERATOR_HINT.replace('{id}', account or '{id}')}"
    )


def raise_for_challenge(
    status: int, headers: Mapping[str, str], body: bytes, where: str, account: str = ""
) -> None:
    """Raise `ChallengeRequired` when the answer is a Cloudflare challenge."""
    if verdict(status, headers, body) == "challenge":
        raise challenge_error(status, where, account)

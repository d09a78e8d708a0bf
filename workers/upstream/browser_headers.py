"""The headers a browser sends, in the order it sends them, for an account's identity.

Cloudflare reads the header order as part of the fingerprint, and clearance is bound to the
User-Agent and client hints that earned it (B5b). `compose(identity, headers, kind)` takes
the request's own headers (Origin, Referer, Accept, Cookie, …) and returns them with the
account's User-Agent, client hints and Accept-Language, ordered as the account's browser
family orders a `fetch` from the page, a top-level `navigate`, or a `websocket` upgrade.
A User-Agent or hint the caller passed is replaced: one identity per account, always.
Chromium identities carry their client hints on every request, the websocket upgrade
included (gpt4free's working Copilot provider opens the socket through curl_cffi's Chrome
defaults, hints and all; a hint never contradicts its own UA); Firefox and Safari never
send them.
"""

from __future__ import annotations

from collections.abc import Mapping

from service.accounts.identity import Identity

_CHROMIUM = {
    "fetch": (
        "content-length",
        "sec-ch-ua-platform",
        "authorization",
        "user-agent",
        "sec-ch-ua",
        "content-type",
        "sec-ch-ua-mobile",
        "accept",
        "origin",
        "sec-fetch-site",
        "sec-fetch-mode",
        "sec-fetch-dest",
        "referer",
        "accept-language",
        "cookie",
        "priority",
    ),
    "navigate": (
        "sec-ch-ua",
        "sec-ch-ua-mobile",
        "sec-ch-ua-platform",
        "upgrade-insecure-requests",
        "user-agent",
        "accept",
        "sec-fetch-site",
        "sec-fetch-mode",
        "sec-fetch-user",
        "sec-fetch-dest",
        "referer",
        "accept-language",
        "cookie",
        "priority",
    ),
    "websocket": (
        "pragma",
        "cache-control",
        "sec-ch-ua",
        "sec-ch-ua-mobile",
        "sec-ch-ua-platform",
        "user-agent",
        "origin",
        "accept-language",
        "cookie",
    ),
}
_FIREFOX = {
    "fetch": (
        "user-agent",
        "accept",
        "accept-language",
        "referer",
        "content-type",
        "content-length",
        "authorization",
        "origin",
        "sec-fetch-dest",
        "sec-fetch-mode",
        "sec-fetch-site",
        "cookie",
        "priority",
    ),
    "navigate": (
        "user-agent",
        "accept",
        "accept-language",
        "referer",
        "upgrade-insecure-requests",
        "sec-fetch-dest",
        "sec-fetch-mode",
        "sec-fetch-site",
        "sec-fetch-user",
        "cookie",
        "priority",
    ),
    "websocket": ("user-agent", "accept", "accept-language", "origin", "cookie", "pragma", "cache-control"),
}
_FETCH = {
    "sec-fetch-site": "same-origin",
    "sec-fetch-mode": "cors",
    "sec-fetch-dest": "empty",
    "priority": "u=1, i",
}
_NAVIGATE = {
    "upgrade-insecure-requests": "1",
    "sec-fetch-site": "none",
    "sec-fetch-mode": "navigate",
    "sec-fetch-user": "?1",
    "sec-fetch-dest": "document",
    "priority": "u=0, i",
}
_WEBSOCKET = {"pragma": "no-cache", "cache-control": "no-cache"}
ACCEPT_ENCODING = {
    "chrome": "gzip, deflate, br, zstd",
    "firefox": "gzip, deflate, br, zstd",
    "safari": "gzip, deflate, br",
}


def engine(identity: Identity) -> str:
    """chrome (Chromium, Edge included), firefox or safari: whose header habits to follow."""
    for name in ("firefox", "safari"):
        if identity.impersonate.startswith(name):
            return name
    return "chrome"


def compose(identity: Identity, headers: Mapping[str, str], kind: str = "fetch") -> list[tuple[str, str]]:
    """The request's headers plus the account's identity, in its browser's order (lower-case names)."""
    browser = engine(identity)
    given = {key.lower(): value for key, value in headers.items()}
    for key in ("user-agent", "accept-language", *(k for k in given if k.startswith("sec-ch-ua"))):
        given.pop(key, None)
    defaults = {"fetch": _FETCH, "navigate": _NAVIGATE, "websocket": _WEBSOCKET}[kind]
    merged: dict[str, str] = {**defaults, **given}
    merged["user-agent"] = identity.user_agent
    merged["accept-language"] = identity.accept_language
    if browser == "chrome":
        merged.update(dict(identity.client_hints))
    if browser != "chrome" or kind == "websocket":
        merged.pop("priority", None)
    order = (_CHROMIUM if browser == "chrome" else _FIREFOX)[kind]
    rank = {name: position for position, name in enumerate(order)}
    hints_at = rank.get("sec-ch-ua", 0)
    ranked = sorted(
        merged.items(),
        key=lambda item: rank.get(item[0], hints_at + 0.5 if item[0].startswith("sec-ch-ua") else len(order)),
    )
    return ranked

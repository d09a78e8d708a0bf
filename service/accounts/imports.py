"""Turning an admin request's `curl` / `har` / `proxy` / `user_agent` into stored identity fields.

The admin API and the CLI both call `identity_changes(body, host)` before the rest of the
body is validated by `manage.parse_changes`: it removes the capture fields, parses the
capture (`capture`), checks it (`identity.resolve`) and answers with the registry fields to
write (`cookies`, `user_agent`, `client_hints`, `accept_language`, `impersonate`, `proxy`)
and the warnings the answer must show. A contradiction is an `InvalidRequest` (400) naming
the field and the problem; no cookie value or proxy credential is ever repeated back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from service.accounts.capture import Capture, parse_curl, parse_har
from service.accounts.errors import CaptureError
from service.accounts.identity import IdentityError, choose_profile, resolve
from service.errors import InvalidRequest

CAPTURE_FIELDS = ("curl", "har")
PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")
MAX_PROXY = 2048


def upstream_host(url: str) -> str:
    """The host an account's captures must come from (the upstream's)."""
    return (urlsplit(url).hostname or "").lower()


def check_proxy(value: Any) -> str:
    """A proxy URL as stored ("" = none); InvalidRequest naming `proxy` otherwise (never echoing it)."""
    if value is None or value == "":
        return ""
    if not isinstance(value, str) or len(value) > MAX_PROXY or any(c in value for c in "\r\n "):
        raise InvalidRequest(
            "`proxy` must be a one-line URL such as socks5://user:pass@host:1080.", param="proxy"
        )
    parts = urlsplit(value.strip())
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme.lower() not in PROXY_SCHEMES or not parts.hostname or port is None:
        raise InvalidRequest(
            f"`proxy` must be {', '.join(s + '://' for s in PROXY_SCHEMES)} with a host and a port.",
            param="proxy",
        )
    return value.strip()


def _capture(name: str, value: Any, host: str) -> Capture:
    try:
        if name == "curl":
            if not isinstance(value, str) or not value.strip():
                raise CaptureError("it must be the text of a request copied as cURL")
            return parse_curl(value)
        return parse_har(value, host)
    except CaptureError as exc:
        raise InvalidRequest(f"`{name}` cannot be used: {exc}.", param=name) from None


def identity_changes(body: Mapping[str, Any], host: str) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """(the rest of the body, the identity fields to store, warnings) for one admin request."""
    rest = {key: value for key, value in body.items() if key not in (*CAPTURE_FIELDS, "proxy")}
    fields: dict[str, Any] = {}
    warnings: list[str] = []
    if "proxy" in body:
        fields["proxy"] = check_proxy(body["proxy"])
    given = [name for name in CAPTURE_FIELDS if name in body]
    if len(given) > 1:
        raise InvalidRequest("Send `curl` or `har`, not both.", param="har")
    if given:
        name = given[0]
        if "cookies" in rest or "user_agent" in rest:
            raise InvalidRequest(
                f"`{name}` carries the cookies and the User-Agent; do not send them too.", param=name
            )
        capture = _capture(name, body[name], host)
        try:
            identity, notes = resolve(
                capture.header("user-agent"), capture.hints(), capture.header("accept-language")
            )
        except IdentityError as exc:
            raise InvalidRequest(f"`{name}` carries an inconsistent identity: {exc}.", param=name) from None
        warnings.extend(notes)
        captured_host = upstream_host(capture.url)
        if host and captured_host != host and not captured_host.endswith("." + host):
            warnings.append(f"the request was made to {captured_host}, not to the upstream {host}")
        if not capture.cookies:
            warnings.append(
                "the capture carries no cookies (Chrome exports HAR files without them unless asked for "
                "'with sensitive data'); the account is anonymous until cookies are added"
            )
        fields.update(
            cookies=capture.cookies,
            user_agent=identity.user_agent,
            client_hints=identity.hints_json(),
            accept_language=identity.accept_language,
            impersonate=identity.impersonate,
        )
    elif isinstance(rest.get("user_agent"), str) and rest["user_agent"].strip():
        profile, note = choose_profile(rest["user_agent"].strip())
        fields.update(impersonate=profile, client_hints="[]")
        warnings.append(
            "a User-Agent alone carries no client hints; copy a request as cURL to import the whole identity"
        )
        if note:
            warnings.append(note)
    return rest, fields, warnings

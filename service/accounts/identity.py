"""The browser identity of an account: what Cloudflare bound its clearance to (B5b).

`cf_clearance` is bound to the User-Agent that earned it, the matching `Sec-CH-UA*`
client hints, the TLS fingerprint and the client's address. An `Identity` keeps the first
three together: the UA, the hints and `Accept-Language` exactly as the browser sent them,
and the curl_cffi impersonation profile (`chrome146`, `firefox147`, …) whose ClientHello,
ALPN and HTTP/2 settings match that browser. The address is the account's proxy, stored
with the secrets (`registry`).

`resolve(user_agent, hints, language)` builds one from what an import found: the profile
is the one of the UA's browser and major version, the nearest version of that browser when
curl_cffi has no exact one (with a warning), and a contradiction — Firefox or Safari with
client hints, hints naming another version, platform or mobility than the UA — is refused
(`IdentityError`), since sending it would be challenged at once. The profile list is read
from curl_cffi itself, so an upgrade of the pin brings its new profiles with it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Mapping
from typing import Any

HINT_NAMES = (
    "sec-ch-ua",
    "sec-ch-ua-mobile",
    "sec-ch-ua-platform",
    "sec-ch-ua-full-version",
    "sec-ch-ua-full-version-list",
    "sec-ch-ua-platform-version",
    "sec-ch-ua-arch",
    "sec-ch-ua-bitness",
    "sec-ch-ua-model",
    "sec-ch-ua-wow64",
)
DEFAULT_LANGUAGE = "en-US,en;q=0.9"
_PROFILE = re.compile(r"^(chrome|edge|firefox|safari)(\d+)a?(?:_(android|macos|ios))?$")
_BRAND = re.compile(r'"([^"]*)"\s*;\s*v\s*=\s*"([^"]*)"')


class IdentityError(ValueError):
    """The captured identity contradicts itself; the message names the contradiction."""


@dataclasses.dataclass(frozen=True)
class Identity:
    """UA, client hints (lower-case names, in the order captured), language and curl_cffi profile."""

    user_agent: str
    impersonate: str
    client_hints: tuple[tuple[str, str], ...] = ()
    accept_language: str = DEFAULT_LANGUAGE

    @property
    def family(self) -> str:
        """The UA's browser: chrome, edge, firefox, safari, or other."""
        return parse_user_agent(self.user_agent)[0]

    def summary(self) -> dict[str, Any]:
        """What the admin API shows: browser and major version, profile, hint names (no values needed)."""
        family, version, _ = parse_user_agent(self.user_agent)
        return {
            "user_agent": f"{family} {version}" if version else family,
            "impersonate": self.impersonate,
            "client_hints": [name for name, _ in self.client_hints],
        }

    def hints_json(self) -> str:
        """The hints as stored in the registry (a JSON list of pairs keeps their order)."""
        return json.dumps([list(pair) for pair in self.client_hints])

    @staticmethod
    def hints_from_json(raw: str) -> tuple[tuple[str, str], ...]:
        """The stored hints ("" = none); a damaged value reads as none."""
        try:
            pairs = json.loads(raw) if raw else []
            return tuple((str(name), str(value)) for name, value in pairs)
        except (ValueError, TypeError):
            return ()


def profiles() -> list[str]:
    """Every impersonation target curl_cffi offers (its `BrowserType` values)."""
    return list(_profiles())


@functools.cache
def _profiles() -> tuple[str, ...]:
    from curl_cffi.requests import BrowserType

    return tuple(member.value for member in BrowserType)


def _profile_key(name: str) -> tuple[str, tuple[int, ...], str] | None:
    """(family, version tuple, os variant) of a profile name, None for the ones we never pick."""
    match = _PROFILE.match(name)
    if match is None:
        return None
    family, digits, variant = match.group(1), match.group(2), match.group(3) or ""
    # safari153 = 15.3, safari2601 = 26.0.1
    safari = (int(digits[:2]), *(int(d) for d in digits[2:])) if len(digits) > 2 else (int(digits),)
    version = safari if family == "safari" else (int(digits),)
    return family, version, variant


def parse_user_agent(user_agent: str) -> tuple[str, str, str]:
    """(family, major version, platform) of a UA; family 'other' when no browser is recognised.

    Platform is the name `Sec-CH-UA-Platform` would carry: Windows, macOS, Linux, Android, iOS.
    """
    ua = user_agent
    platform = (
        "Android"
        if "Android" in ua
        else "iOS"
        if ("iPhone" in ua or "iPad" in ua)
        else "Windows"
        if "Windows" in ua
        else "macOS"
        if "Macintosh" in ua or "Mac OS X" in ua
        else "Chrome OS"
        if "CrOS" in ua
        else "Linux"
        if "Linux" in ua
        else ""
    )
    for family, pattern in (
        ("edge", r"Edg(?:e|A|iOS)?/(\d+)"),
        ("firefox", r"Firefox/(\d+)"),
        ("chrome", r"(?:Chrome|CriOS)/(\d+)"),
        ("safari", r"Version/(\d+(?:\.\d+)?).*Safari/"),
    ):
        match = re.search(pattern, ua)
        if match:
            return family, match.group(1), platform
    return "other", "", platform


def _wanted(family: str, platform: str) -> tuple[str, str]:
    """The profile family and os variant for a browser: Edge is Chromium, so Chrome's profiles."""
    profile_family = "chrome" if family in ("chrome", "edge") else family
    variant = {"Android": "android", "iOS": "ios"}.get(platform, "")
    if profile_family == "chrome" and platform == "macOS":
        variant = "macos"
    return profile_family, variant


def choose_profile(user_agent: str, available: list[str] | None = None) -> tuple[str, str | None]:
    """The profile for `user_agent` and a warning when it is not an exact match (None when it is).

    Candidates are the browser's profiles for the UA's kind of device (mobile variants for a
    mobile UA when curl_cffi has any; desktop ones otherwise, an OS-specific one preferred).
    The same version wins; else the nearest, the newer on a tie.
    """
    names = profiles() if available is None else available
    family, version, platform = parse_user_agent(user_agent)
    want_family, want_variant = _wanted(family, platform)
    keyed = [(name, key) for name in names if (key := _profile_key(name)) and key[0] == want_family]
    if family == "other" or not keyed:
        fallback = newest_chrome(names)
        what = (
            "no browser curl_cffi can impersonate"
            if family == "other"
            else f"{family}, which curl_cffi has no profile for"
        )
        return (
            fallback,
            f"the User-Agent names {what}; using {fallback}, which will not match the browser "
            "that earned the cookies",
        )
    mobile = (
        [item for item in keyed if item[1][2] == want_variant] if want_variant in ("android", "ios") else []
    )
    pool = mobile or [item for item in keyed if item[1][2] in ("", want_variant)]
    wanted = tuple(int(part) for part in version.split("."))
    exact = [item for item in pool if item[1][1][: len(wanted)] == wanted]
    if exact:
        exact.sort(key=lambda item: item[1][2] != want_variant)
        return exact[0][0], None
    best = min(
        pool, key=lambda item: (abs(item[1][1][0] - wanted[0]), -item[1][1][0], item[1][2] != want_variant)
    )
    return best[0], (
        f"curl_cffi has no profile for {family} {version}; using the nearest, {best[0]} "
        "(its TLS fingerprint may differ from the browser's)"
    )


def newest_chrome(available: list[str] | None = None) -> str:
    """The newest desktop Chrome profile curl_cffi has (the installed one's is found once: turns ask)."""
    if available is None:
        return _newest_installed_chrome()
    keys = ((_profile_key(name), name) for name in available)
    return max((key[1], name) for key, name in keys if key and key[0] == "chrome" and not key[2])[1]


@functools.cache
def _newest_installed_chrome() -> str:
    return newest_chrome(profiles())


@functools.cache
def default_identity() -> Identity:
    """For `UPSTREAM_COOKIES` lines and accounts added without a capture: the newest Chrome, consistent.
    Built once (frozen, from the installed curl_cffi only): each turn of such an account asks."""
    profile = newest_chrome()
    major = _profile_key(profile)[1][0]  # type: ignore[index]
    user_agent = (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        f"Chrome/{major}.0.0.0 Safari/537.36"
    )
    hints = (
        ("sec-ch-ua", f'"Chromium";v="{major}", "Not?A_Brand";v="24", "Google Chrome";v="{major}"'),
        ("sec-ch-ua-mobile", "?0"),
        ("sec-ch-ua-platform", '"Windows"'),
    )
    return Identity(user_agent=user_agent, impersonate=profile, client_hints=hints)


def check_hints(user_agent: str, hints: Mapping[str, str]) -> None:
    """Refuse hints that contradict the UA (what a cleared browser never sends together)."""
    family, version, platform = parse_user_agent(user_agent)
    if not hints:
        return
    if family in ("firefox", "safari"):
        raise IdentityError(
            f"the User-Agent is {family.title()} {version}, but the capture carries Chrome-style client "
            f"hints ({', '.join(sorted(hints))}); {family.title()} never sends them: copy the request "
            "from one browser"
        )
    brands = dict((name, ver) for name, ver in _BRAND.findall(hints.get("sec-ch-ua", "")))
    if brands and family in ("chrome", "edge"):
        _check_brands(family, version, brands)
    _check_device(platform, hints)


def _check_brands(family: str, version: str, brands: Mapping[str, str]) -> None:
    """Refuse a sec-ch-ua whose brands or engine version are not the UA's Chromium browser."""
    engine = brands.get("Chromium") or brands.get("Google Chrome") or brands.get("Microsoft Edge")
    if engine and version and engine.split(".")[0] != version:
        raise IdentityError(
            f"sec-ch-ua says Chromium {engine} but the User-Agent says {family} {version}: "
            "the hints and the User-Agent come from different browsers"
        )
    if family == "edge" and "Microsoft Edge" not in brands:
        raise IdentityError("the User-Agent is Edge, but sec-ch-ua names no Microsoft Edge brand")
    if family == "chrome" and "Microsoft Edge" in brands:
        raise IdentityError("the User-Agent is Chrome, but sec-ch-ua names Microsoft Edge")


def _check_device(platform: str, hints: Mapping[str, str]) -> None:
    """Refuse mobile and platform hints that are not the UA's device."""
    mobile = hints.get("sec-ch-ua-mobile", "").strip()
    if mobile and (mobile == "?1") != (platform in ("Android", "iOS")):
        raise IdentityError(
            f"sec-ch-ua-mobile is {mobile} but the User-Agent is "
            f"{'not ' if mobile == '?1' else ''}a mobile browser"
        )
    hinted = hints.get("sec-ch-ua-platform", "").strip().strip('"')
    if hinted and platform and hinted != platform:
        raise IdentityError(f"sec-ch-ua-platform is {hinted!r} but the User-Agent's platform is {platform!r}")


def resolve(user_agent: str, hints: Mapping[str, str], language: str = "") -> tuple[Identity, list[str]]:
    """The identity a capture carries and the warnings for its answer (IdentityError: it contradicts)."""
    warnings: list[str] = []
    if not user_agent:
        identity = default_identity()
        warnings.append(
            f"the capture has no User-Agent; the default identity ({identity.impersonate}) is used, which "
            "is not the browser that earned the cookies: Cloudflare may challenge it"
        )
        if language:
            identity = dataclasses.replace(identity, accept_language=language)
        return identity, warnings
    check_hints(user_agent, hints)
    profile, note = choose_profile(user_agent)
    if note:
        warnings.append(note)
    family = parse_user_agent(user_agent)[0]
    if family in ("chrome", "edge") and "sec-ch-ua" not in hints:
        warnings.append(
            "the capture has no Sec-CH-UA client hints, which this browser sends on every request; "
            "copy a request that carries them (any fetch to the upstream's host)"
        )
    ordered = tuple((name, hints[name]) for name in hints if name in HINT_NAMES)
    return (
        Identity(
            user_agent=user_agent,
            impersonate=profile,
            client_hints=ordered,
            accept_language=language or DEFAULT_LANGUAGE,
        ),
        warnings,
    )

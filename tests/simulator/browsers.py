"""Which browser a client is: by its TLS fingerprint, by its User-Agent, and whether its client hints agree.

Cloudflare's bot check compares three things a browser sends (upstream-protocols.md B5b):
the TLS ClientHello (JA4), the User-Agent, and the `Sec-CH-UA*` client hints Chromium
adds. A script shows up in the first (Python's `ssl` is no browser), a half-done disguise
in a disagreement between them. This module knows the fingerprints and the rules; the gate
that applies them is `cloudflare`. Pure: no I/O.

`FINGERPRINTS` maps JA4 to a browser family and the range of major versions seen with it.
**Where the values come from**: measured on 2026-12-07 from curl_cffi 0.17.0 (its BoringSSL
builds of every `impersonate` target, `curl_cffi.requests.BrowserType`) against the
simulator's TLS port; `tests/unit/test_sim_tls.py` connects with every target and checks
each still classifies as its own browser, and that Python's `ssl` does not. A browser sends
two fingerprints: REST connections offer ALPN `h2,http/1.1`, websocket connections only
`http/1.1` (and Chromium then drops its ALPS extension), so each profile has a REST and a
websocket entry, and one clearance must cover both (`same_browser`). Real browsers agree:
`…_02713d6af862` is the Chrome JA4 that JA4 documentation quotes, and a browserleaks capture
of Chrome 143 (github.com/service0427/v2_cp_app `tls.md`) reads `…_d8a2da3f94cd`. Edge
shares Chrome's fingerprints (`edge99`/`edge101` = Chromium 99-101). SNI is ignored (the
`d`/`i` flag and its place in the extension count): the same client connects by name or by
address. Major versions are matched loosely (`SLACK`): a UA is flagged only when its version
lies well outside what the fingerprint's browser versions send, so "nearest profile" choices
pass.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

CHROMIUM, FIREFOX, SAFARI = "chromium", "firefox", "safari"
SLACK = {CHROMIUM: 8, FIREFOX: 8, SAFARI: 1}
"""How many major versions beyond a fingerprint's measured range a UA may claim."""

FINGERPRINTS: dict[str, tuple[str, int, int]] = {
    # JA4: (family, lowest major, highest major),  # connection kind: the curl_cffi targets measured
    "t13d1515h1_8daaf6152771_de4a06bb82e3": (CHROMIUM, 99, 116),  # websocket: edge99, edge101, chrome99, …
    "t13d1516h2_8daaf6152771_e5627efa2ab1": (CHROMIUM, 99, 116),  # REST: edge99, edge101, chrome99, chrom…
    "t13d1515h1_8daaf6152771_0a20fe35d3a5": (CHROMIUM, 119, 146),  # websocket: chrome119, chrome120, chro…
    "t13d1516h2_8daaf6152771_02713d6af862": (CHROMIUM, 119, 131),  # REST: chrome119, chrome120, chrome123…
    "t13d1517h2_8daaf6152771_b1ff8ab2d16f": (CHROMIUM, 119, 131),  # REST, padded at random: chrome119-131…
    "t13d1516h1_8daaf6152771_1a63afa7c478": (CHROMIUM, 131, 131),  # websocket: chrome131_android
    "t13d1516h2_8daaf6152771_d8a2da3f94cd": (CHROMIUM, 133, 146),  # REST: chrome136, chrome142, chrome145…
    "t13d1515h1_8daaf6152771_e4c2b8c727f2": (CHROMIUM, 150, 151),  # websocket: chrome150, chrome151, chro…
    "t13d1516h2_8daaf6152771_806a8c22fdea": (CHROMIUM, 150, 151),  # REST: chrome150, chrome151, chrome151…
    "t13d1516h1_8daaf6152771_5b37b36a67c0": (CHROMIUM, 152, 152),  # websocket: chrome152, chrome152_macos
    "t13d1517h2_8daaf6152771_cb7bf5808d99": (CHROMIUM, 152, 152),  # REST: chrome152, chrome152_macos
    "t13d1513h1_8daaf6152771_748f4c70de1c": (FIREFOX, 128, 128),  # websocket: tor145
    "t13d1513h2_8daaf6152771_748f4c70de1c": (FIREFOX, 128, 128),  # REST: tor145
    "t13d1714h1_5b57614c22b0_d390cef08237": (FIREFOX, 133, 133),  # websocket: firefox133
    "t13d1716h2_5b57614c22b0_eeeea6562960": (FIREFOX, 133, 133),  # REST: firefox133
    "t13d1715h1_5b57614c22b0_8460c7ec26ba": (FIREFOX, 135, 147),  # websocket: firefox135, firefox144, fir…
    "t13d1717h2_5b57614c22b0_3cbfd9057e0d": (FIREFOX, 135, 147),  # REST: firefox135, firefox144, firefox147
    "t13d1617h1_86a278354501_3cbfd9057e0d": (FIREFOX, 153, 153),  # websocket: firefox153
    "t13d1617h2_86a278354501_3cbfd9057e0d": (FIREFOX, 153, 153),  # REST: firefox153
    "t13d1517h1_8daaf6152771_3cbfd9057e0d": (FIREFOX, 154, 155),  # websocket: firefox154, firefox155
    "t13d1517h2_8daaf6152771_3cbfd9057e0d": (FIREFOX, 154, 155),  # REST: firefox154, firefox155
    "t13d2014h1_a09f3c656075_14788d8d241b": (SAFARI, 15, 17),  # websocket: safari155, safari170, safari15…
    "t13d2014h2_a09f3c656075_14788d8d241b": (SAFARI, 15, 17),  # REST: safari155, safari170, safari15_5, s…
    "t13d2613h1_2802a3db6c62_845d286b0d67": (SAFARI, 15, 15),  # websocket: safari153, safari15_3
    "t13d2613h2_2802a3db6c62_845d286b0d67": (SAFARI, 15, 15),  # REST: safari153, safari15_3
    "t13d2014h1_a09f3c656075_e42f34c56612": (SAFARI, 18, 18),  # websocket: safari180, safari184, safari18…
    "t13d2014h2_a09f3c656075_e42f34c56612": (SAFARI, 18, 18),  # REST: safari180, safari184, safari18_0, s…
    "t13d2013h1_a09f3c656075_7f0f34a4126d": (SAFARI, 26, 27),  # websocket: safari270, safari2601, safari2…
    "t13d2013h2_a09f3c656075_7f0f34a4126d": (SAFARI, 26, 27),  # REST: safari270, safari2601, safari270_ios
    "t13d2014h1_a09f3c656075_d0a99439f9b1": (SAFARI, 26, 26),  # websocket: safari260
    "t13d2014h2_a09f3c656075_d0a99439f9b1": (SAFARI, 26, 26),  # REST: safari260
    "t13d2015h1_a09f3c656075_c258b721e490": (SAFARI, 26, 26),  # websocket: safari260_ios
    "t13d2015h2_a09f3c656075_c258b721e490": (SAFARI, 26, 26),  # REST: safari260_ios
}
ENGINE = {"chrome": CHROMIUM, "edge": CHROMIUM, "opera": CHROMIUM, "firefox": FIREFOX, "safari": SAFARI}
"""User-Agent browser → the TLS family it must present."""
PLATFORMS = (
    ("Android", "Android"),
    ("CrOS", "Chrome OS"),
    ("iPhone", "iOS"),
    ("iPad", "iOS"),
    ("Windows NT", "Windows"),
    ("Macintosh", "macOS"),
    ("Linux", "Linux"),
)
"""UA token → the `Sec-CH-UA-Platform` value Chromium sends with it (first match wins)."""
BRAND = re.compile(r'"([^"]*)"\s*;\s*v\s*=\s*"([^"]*)"')


def same_fingerprint(first: str, second: str) -> bool:
    """Two JA4 values equal but for SNI (the `d`/`i` flag, and SNI in the extension count)."""
    return _with_sni(first) == _with_sni(second)


def _with_sni(ja4: str) -> str:
    """`ja4` as it would read had the client sent SNI (`i` → `d`, one more extension)."""
    if len(ja4) < 10 or ja4[3] != "i" or not ja4[6:8].isdigit():
        return ja4
    return f"{ja4[:3]}d{ja4[4:6]}{min(int(ja4[6:8]) + 1, 99):02d}{ja4[8:]}"


def same_browser(first: str, second: str) -> bool:
    """Whether two JA4 values can come from one browser: equal, or its REST and websocket pair.

    Known fingerprints of the same family whose version ranges overlap count as one browser
    (Chrome 146's websocket hello is also Chrome 120's); anything else must be equal.
    """
    if same_fingerprint(first, second):
        return True
    one, other = fingerprint_browser(first), fingerprint_browser(second)
    if one is None or other is None or one[0] != other[0]:
        return False
    return one[1] <= other[2] and other[1] <= one[2]


def fingerprint_browser(ja4: str) -> tuple[str, int, int] | None:
    """(family, lowest major, highest major) of a known browser fingerprint, or None."""
    for known, entry in FINGERPRINTS.items():
        if same_fingerprint(known, ja4):
            return entry
    return None


@dataclasses.dataclass(frozen=True)
class Agent:
    """What a User-Agent header claims: browser (chrome/edge/opera/firefox/safari), major, platform."""

    browser: str
    major: int
    platform: str | None
    mobile: bool

    @property
    def engine(self) -> str:
        """The TLS family this browser presents."""
        return ENGINE[self.browser]


def parse_user_agent(user_agent: str) -> Agent | None:
    """The browser a UA string names, or None (curl, python-requests, bots…)."""
    chrome = re.search(r"\bChrome/(\d+)", user_agent)
    browser, version = "", None
    if re.search(r"\b(?:CriOS|FxiOS|EdgiOS)/", user_agent):
        return None  # iOS browsers are WebKit with another name; not modelled
    if chrome and re.search(r"\bEdg(?:e|A)?/\d+", user_agent):
        browser, version = "edge", chrome
    elif chrome and re.search(r"\bOPR/\d+", user_agent):
        browser, version = "opera", chrome
    elif firefox := re.search(r"\bFirefox/(\d+)", user_agent):
        browser, version = "firefox", firefox
    elif chrome:
        browser, version = "chrome", chrome
    elif "Safari/" in user_agent and (safari := re.search(r"\bVersion/(\d+)", user_agent)):
        browser, version = "safari", safari
    if version is None or not user_agent.startswith("Mozilla/5.0"):
        return None
    platform = next((name for token, name in PLATFORMS if token in user_agent), None)
    return Agent(browser, int(version.group(1)), platform, "Mobile" in user_agent)


def ua_problem(agent: Agent | None, ja4: str) -> str | None:
    """Why the UA does not fit the fingerprint's browser (None: it fits)."""
    known = fingerprint_browser(ja4)
    if known is None:
        return "not a browser's TLS fingerprint"
    family, low, high = known
    if agent is None:
        return f"User-Agent names no browser, TLS says {family}"
    if agent.engine != family:
        return f"User-Agent says {agent.browser}, TLS says {family}"
    slack = SLACK[family]
    if not low - slack <= agent.major <= high + slack:
        return f"User-Agent says {agent.browser} {agent.major}, TLS says {family} {low}-{high}"
    return None


def hints_problem(agent: Agent, headers: Mapping[str, str]) -> str | None:
    """Why the `Sec-CH-UA*` headers contradict the UA (None: they agree or are absent).

    `headers` maps lower-case names to values. Only Chromium sends client hints; Firefox
    and Safari never do. Chromium's brands carry its major version, `-Mobile` is `?1`
    exactly for a mobile UA, and `-Platform` names the UA's platform.
    """
    hints = {name: value for name, value in headers.items() if name.startswith("sec-ch-ua")}
    if not hints:
        return None
    if agent.engine != CHROMIUM:
        return f"a {agent.browser} User-Agent with client hints ({', '.join(sorted(hints))})"
    for name in ("sec-ch-ua", "sec-ch-ua-full-version-list"):
        if name in hints:
            problem = _brands_problem(agent, hints[name], name)
            if problem:
                return problem
    mobile = hints.get("sec-ch-ua-mobile")
    if mobile is not None and mobile.strip() != ("?1" if agent.mobile else "?0"):
        return (
            f"sec-ch-ua-mobile {mobile.strip()} with a {'mobile' if agent.mobile else 'desktop'} User-Agent"
        )
    platform = hints.get("sec-ch-ua-platform")
    if platform is not None and agent.platform is not None and platform.strip().strip('"') != agent.platform:
        return f"sec-ch-ua-platform {platform.strip()} with a {agent.platform} User-Agent"
    return None


def _brands_problem(agent: Agent, value: str, name: str) -> str | None:
    brands = {brand: version for brand, version in BRAND.findall(value)}
    if not brands:
        return f"{name} lists no brands"
    real = {
        b: v for b, v in brands.items() if "Not" not in b and "Brand" not in b and not b.startswith("Opera")
    }
    for brand, version in real.items():
        if version.split(".")[0] != str(agent.major):
            return f"{name} says {brand} {version}, User-Agent says {agent.browser} {agent.major}"
    if ("Microsoft Edge" in real) != (agent.browser == "edge"):
        return f"{name} brands {sorted(real)} do not name the User-Agent's {agent.browser}"
    if "Google Chrome" in real and agent.browser != "chrome":
        return f"{name} says Google Chrome, User-Agent says {agent.browser}"
    return None

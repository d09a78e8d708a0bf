"""Reading an account's identity from browser copies: cURL (Chrome, Edge, Firefox; bash and cmd) and HAR.

The fixtures in tests/fixtures/captures are copies in each browser's own format with every
cookie and token replaced by a fake; the table says what each must yield.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from service.accounts import identity
from service.accounts.capture import parse_curl, parse_har
from service.accounts.errors import CaptureError
from service.accounts.imports import check_proxy, identity_changes
from service.errors import InvalidRequest

CAPTURES = Path(__file__).resolve().parents[1] / "fixtures" / "captures"
HOST = "copilot.microsoft.com"
CHROME_146 = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/146.0.0.0 Safari/537.36"
)
FIREFOX_147 = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:147.0) Gecko/20100101 Firefox/147.0"
CHROME_HINTS = '"Chromium";v="146", "Not-A.Brand";v="24", "Google Chrome";v="146"'


def capture(name: str) -> str:
    return (CAPTURES / name).read_text()


@pytest.mark.parametrize(
    ("name", "url_path", "cookies", "user_agent", "hints", "language"),
    [
        (
            "chrome_bash.txt",
            "/c/api/user",
            "MUID=FAKE0MUID0000000000000000000000; _EDGE_S=F=1&SID=FAKESID; _U=FAKE-U-COOKIE-abc123; "
            "cf_clearance=FAKECLEARANCE.abc-1796600000-1.2.1.1-FAKEtail",
            CHROME_146,
            {"sec-ch-ua": CHROME_HINTS, "sec-ch-ua-mobile": "?0", "sec-ch-ua-platform": '"Windows"'},
            "de-DE,de;q=0.9,en-US;q=0.8,en;q=0.7",
        ),
        (
            "chrome_cmd.txt",
            "/c/api/conversations",
            "MUID=FAKE0MUID0000000000000000000000; _EDGE_S=F=1&SID=FAKESID; _U=FAKE-U-COOKIE-abc123; "
            "cf_clearance=FAKECLEARANCE.abc-1796600000-1.2.1.1-FAKEtail",
            CHROME_146,
            {"sec-ch-ua": CHROME_HINTS, "sec-ch-ua-mobile": "?0", "sec-ch-ua-platform": '"Windows"'},
            "en-US,en;q=0.9",
        ),
        (
            "edge_bash.txt",
            "/c/api/start",
            "MUID=FAKE0MUID0000000000000000000000; __Host-copilot-anon=FAKEANON.token; "
            "cf_clearance=FAKECLEARANCE-1796600000-1.2.1.1-x",
            CHROME_146 + " Edg/146.0.0.0",
            {
                "sec-ch-ua": '"Microsoft Edge";v="146", "Not-A.Brand";v="24", "Chromium";v="146"',
                "sec-ch-ua-full-version-list": '"Microsoft Edge";v="146.0.3856.62", '
                '"Not-A.Brand";v="24.0.0.0", "Chromium";v="146.0.7680.80"',
                "sec-ch-ua-mobile": "?0",
                "sec-ch-ua-platform": '"Windows"',
            },
            "en-US,en;q=0.9",
        ),
        (
            "firefox_bash.txt",
            "/c/api/user",
            "MUID=FAKE0MUID; _U=FAKE-U-FF; cf_clearance=FAKEFF-1796600000-1.2.1.1-y",
            FIREFOX_147,
            {},
            "en-US,en;q=0.5",
        ),
        (
            "firefox_cmd.txt",
            "/c/api/user",
            "MUID=FAKE0MUID; _U=FAKE-U-FF; pct=%41; cf_clearance=FAKEFF-1796600000-1.2.1.1-y",
            FIREFOX_147,
            {},
            "en-US,en;q=0.5",
        ),
    ],
)
def test_curl_copies_yield_their_cookies_and_identity(
    name: str, url_path: str, cookies: str, user_agent: str, hints: dict[str, str], language: str
) -> None:
    found = parse_curl(capture(name))
    assert found.url == f"https://{HOST}{url_path}"
    assert found.cookies == cookies
    assert found.header("user-agent") == user_agent
    assert found.hints() == hints
    assert found.header("accept-language") == language
    assert "cookie" not in dict(found.headers)  # cookies travel only in `cookies`


def test_cmd_quoting_keeps_escaped_quotes_and_the_body_does_not_leak_into_headers() -> None:
    found = parse_curl(capture("firefox_cmd.txt"))
    assert found.header("x-quote") == 'say "hi"'
    chrome = parse_curl(capture("chrome_cmd.txt"))
    assert [name for name, _ in chrome.headers if name.startswith("{")] == []


def test_a_har_yields_its_newest_request_to_the_upstream_host() -> None:
    text = capture("chrome.har")
    for data in (text, json.loads(text)):
        found = parse_har(data, HOST)
        assert found.url == f"https://{HOST}/c/api/conversations"  # 10:00:05, not the older one
        assert found.cookies == "_U=FAKE-NEW; cf_clearance=NEW-1796600100-1.2.1.1-b"  # from the cookie list
        assert found.header("user-agent") == CHROME_146
        assert not any(name.startswith(":") for name, _ in found.headers)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("wget https://copilot.microsoft.com/", "not a cURL command"),
        ("curl 'https://copilot.microsoft.com/ -H 'a: b'", "unclosed"),
        ("curl -H 'accept: */*'", r"no http\(s\) URL"),
        ("curl 'https://copilot.microsoft.com/' -b cookies.txt", "cookie file"),
    ],
)
def test_unusable_curl_text_is_refused_with_the_reason(text: str, problem: str) -> None:
    with pytest.raises(CaptureError, match=problem):
        parse_curl(text)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ("not json", "not JSON"),
        ({"entries": []}, "no `log` object"),
        ({"log": {"entries": [{"request": {"url": "https://www.bing.com/"}}]}}, "no request to"),
    ],
)
def test_unusable_hars_are_refused_with_the_reason(data: Any, problem: str) -> None:
    with pytest.raises(CaptureError, match=problem):
        parse_har(data, HOST)


# --- identity -------------------------------------------------------------------------------

PROFILES = [
    "edge99",
    "edge101",
    "chrome120",
    "chrome131",
    "chrome133a",
    "chrome136",
    "chrome142",
    "chrome145",
    "chrome146",
    "chrome150",
    "chrome151",
    "chrome151_macos",
    "chrome152",
    "chrome152_macos",
    "chrome131_android",
    "safari180",
    "safari184",
    "safari260",
    "safari2601",
    "safari260_ios",
    "firefox133",
    "firefox135",
    "firefox144",
    "firefox147",
    "firefox155",
    "tor145",
]


@pytest.mark.parametrize(
    ("user_agent", "profile", "exact"),
    [
        (CHROME_146, "chrome146", True),
        (CHROME_146 + " Edg/146.0.0.0", "chrome146", True),  # Edge presents Chromium's TLS
        (FIREFOX_147, "firefox147", True),
        (
            CHROME_146.replace("Windows NT 10.0; Win64; x64", "Macintosh; Intel Mac OS X 10_15_7").replace(
                "146", "152"
            ),
            "chrome152_macos",
            True,
        ),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            "Version/18.4 Safari/605.1.15",
            "safari184",
            True,
        ),
        (CHROME_146.replace("146", "147"), "chrome146", False),  # the nearest version
        (CHROME_146.replace("146", "148"), "chrome150", False),  # 146 and 150 are as near: the newer
        (FIREFOX_147.replace("147", "140"), "firefox144", False),
        (
            "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/146.0.0.0 Mobile "
            "Safari/537.36",
            "chrome131_android",
            False,
        ),
        ("curl/8.5.0", "chrome152", False),
    ],
)
def test_the_profile_matches_the_user_agents_browser_and_version(
    user_agent: str, profile: str, exact: bool
) -> None:
    chosen, warning = identity.choose_profile(user_agent, PROFILES)
    assert chosen == profile
    assert (warning is None) is exact


def test_profiles_come_from_curl_cffi_and_the_default_is_its_newest_chrome() -> None:
    from curl_cffi.requests import BrowserType

    assert identity.profiles() == [member.value for member in BrowserType]
    default = identity.default_identity()
    assert default.impersonate == identity.newest_chrome()
    major = default.impersonate.removeprefix("chrome")
    assert f"Chrome/{major}.0.0.0" in default.user_agent
    hints = dict(default.client_hints)
    assert f'"Google Chrome";v="{major}"' in hints["sec-ch-ua"]
    identity.check_hints(default.user_agent, hints)  # consistent with itself


@pytest.mark.parametrize(
    ("user_agent", "hints", "problem"),
    [
        (FIREFOX_147, {"sec-ch-ua": CHROME_HINTS}, "Firefox never sends them"),
        (
            CHROME_146.replace("146", "150"),
            {"sec-ch-ua": CHROME_HINTS},
            "Chromium 146 but the User-Agent says chrome 150",
        ),
        (CHROME_146, {"sec-ch-ua-platform": '"macOS"'}, "'macOS' but the User-Agent's platform is 'Windows'"),
        (CHROME_146, {"sec-ch-ua-mobile": "?1"}, "is not a mobile browser"),
        (CHROME_146 + " Edg/146.0.0.0", {"sec-ch-ua": CHROME_HINTS}, "no Microsoft Edge brand"),
    ],
)
def test_contradictory_identities_are_refused_naming_the_problem(
    user_agent: str, hints: dict[str, str], problem: str
) -> None:
    with pytest.raises(identity.IdentityError, match=problem):
        identity.resolve(user_agent, hints)


# --- the admin request ----------------------------------------------------------------------


def test_a_curl_import_stores_the_whole_identity_and_no_warning_when_complete() -> None:
    rest, fields, warnings = identity_changes({"curl": capture("chrome_bash.txt"), "label": "laptop"}, HOST)
    assert rest == {"label": "laptop"} and warnings == []
    assert fields["user_agent"] == CHROME_146 and fields["impersonate"] == "chrome146"
    assert fields["cookies"].startswith("MUID=") and fields["accept_language"].startswith("de-DE")
    assert [name for name, _ in json.loads(fields["client_hints"])] == [
        "sec-ch-ua",
        "sec-ch-ua-mobile",
        "sec-ch-ua-platform",
    ]


def test_missing_hints_and_missing_user_agent_are_warnings_not_silent_defaults() -> None:
    no_hints = "curl 'https://copilot.microsoft.com/' -b '_U=FAKE' -H 'user-agent: " + CHROME_146 + "'"
    _, fields, warnings = identity_changes({"curl": no_hints}, HOST)
    assert fields["impersonate"] == "chrome146" and any("no Sec-CH-UA client hints" in w for w in warnings)
    _, fields, warnings = identity_changes(
        {"curl": "curl 'https://copilot.microsoft.com/' -b '_U=FAKE'"}, HOST
    )
    assert fields["impersonate"] == identity.newest_chrome()
    assert any("no User-Agent" in w for w in warnings)


def test_an_inconsistent_capture_is_a_400_naming_the_field_and_the_problem() -> None:
    with pytest.raises(InvalidRequest) as caught:
        identity_changes({"curl": capture("inconsistent_bash.txt")}, HOST)
    assert caught.value.param == "curl" and "Firefox never sends them" in str(caught.value)
    assert "FAKE" not in str(caught.value)


def test_a_capture_from_another_host_and_one_without_cookies_are_flagged() -> None:
    text = "curl 'https://www.bing.com/' -H 'user-agent: " + FIREFOX_147 + "'"
    _, fields, warnings = identity_changes({"curl": text}, HOST)
    assert fields["cookies"] == ""
    assert any("www.bing.com, not to the upstream" in w for w in warnings)
    assert any("carries no cookies" in w for w in warnings)


@pytest.mark.parametrize(
    "proxy",
    ["http://user:pw@proxy.example:3128", "https://proxy.example:443", "socks5://u:p@10.0.0.1:1080"],
)
def test_proxies_are_accepted_as_urls(proxy: str) -> None:
    assert check_proxy(proxy) == proxy


@pytest.mark.parametrize("proxy", ["ftp://x:21", "http://no-port.example", "socks5://u:secret@h:1080\n", 3])
def test_bad_proxies_are_refused_without_echoing_them(proxy: Any) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_proxy(proxy)
    assert caught.value.param == "proxy" and "secret" not in str(caught.value)

"""The simulator's ClientHello parser, JA3/JA4 and browser table, on real ClientHello bytes.

Each hello is captured live: a raw TCP listener reads the first bytes a real client sends
(Python's `ssl`, curl_cffi's BoringSSL builds of browser profiles), so the parser is checked
against exactly what the TLS port will see, and the browser table (`browsers.FINGERPRINTS`)
against every curl_cffi 0.17.0 impersonation target, REST and websocket alike.
"""

from __future__ import annotations

import dataclasses
import hashlib
import socket
import ssl
import threading
from collections.abc import Callable

import pytest
from curl_cffi import requests as curl_requests
from curl_cffi.requests import BrowserType

from tests.simulator import browsers, tls_hello


def capture(client: Callable[[int], object]) -> bytes:
    """The first TLS record(s) `client(port)` sends to a listener that never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    captured: list[bytes] = []

    def read_hello() -> None:
        connection, _ = listener.accept()
        data = b""
        with connection:
            connection.settimeout(5)
            while True:
                try:
                    tls_hello.handshake_message(data)
                    break
                except tls_hello.Incomplete:
                    chunk = connection.recv(65536)
                    if not chunk:
                        break
                    data += chunk
        captured.append(data)

    reader = threading.Thread(target=read_hello)
    reader.start()
    try:
        client(listener.getsockname()[1])
    except Exception:  # the listener hangs up mid-handshake: every client fails here
        pass
    reader.join(timeout=10)
    listener.close()
    assert captured, "no ClientHello captured"
    return captured[0]


def python_ssl(port: int) -> None:
    context = ssl.create_default_context()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        context.wrap_socket(sock, server_hostname="localhost")


def curl(target: str, *, websocket: bool = False, host: str = "localhost") -> Callable[[int], object]:
    def connect(port: int) -> object:
        if websocket:
            return curl_requests.Session(impersonate=target, timeout=3).ws_connect(f"wss://{host}:{port}/")
        return curl_requests.get(f"https://{host}:{port}/", impersonate=target, timeout=3)

    return connect


def family_of(target: str) -> str:
    if target.startswith(("chrome", "edge")):
        return browsers.CHROMIUM
    if target.startswith(("firefox", "tor")):
        return browsers.FIREFOX
    assert target.startswith("safari")
    return browsers.SAFARI


def test_python_ssl_hello_parses_and_is_no_browser() -> None:
    hello = tls_hello.parse(capture(python_ssl))
    assert hello.sni == "localhost"
    assert hello.version == 0x0304 and hello.legacy_version == 0x0303
    assert hello.alpn == ()
    ja4 = hello.ja4()
    assert ja4.startswith("t13d") and ja4.endswith(ja4[-12:]) and ja4[8:10] == "00"  # no ALPN
    assert browsers.fingerprint_browser(ja4) is None
    assert browsers.ua_problem(browsers.parse_user_agent(CHROME_UA), ja4) == "not a browser's TLS fingerprint"


def test_chrome_hello_fields_and_fingerprints() -> None:
    """curl_cffi chrome146: GREASE in every list, shuffled extensions, a stable JA4."""
    first = tls_hello.parse(capture(curl("chrome146")))
    second = tls_hello.parse(capture(curl("chrome146")))
    assert first.alpn == ("h2", "http/1.1") and first.sni == "localhost"
    assert tls_hello.is_grease(first.ciphers[0]) and any(tls_hello.is_grease(e) for e in first.extensions)
    assert 0x11EC in first.groups  # X25519MLKEM768, Chrome 131+
    # Chrome permutes its extensions on every connection: JA3 changes, JA4 (sorted) does not.
    assert sorted(first.extensions) != list(first.extensions) or sorted(second.extensions) != list(
        second.extensions
    )
    assert first.ja4() == second.ja4() == "t13d1516h2_8daaf6152771_d8a2da3f94cd"
    # JA3: legacy version, then the lists in the order sent, GREASE removed; JA3 hash = its MD5.
    version, ciphers, extensions, groups, formats = first.ja3().split(",")
    assert version == "771" and ciphers.split("-")[0] == "4865" and formats == "0"
    assert set(extensions.split("-")) == {str(e) for e in first.extensions if not tls_hello.is_grease(e)}
    assert "4588" in groups.split("-")
    assert first.ja3_hash() == hashlib.md5(first.ja3().encode(), usedforsecurity=False).hexdigest()


def test_ja4_matches_the_published_chrome_value() -> None:
    """JA4 documentation (Cloudflare's bot fields, JA4 explainers) quotes Chrome as …_02713d6af862."""
    assert tls_hello.parse(capture(curl("chrome131"))).ja4() == "t13d1516h2_8daaf6152771_02713d6af862"


def test_ja4_by_hand() -> None:
    """JA4 per FoxIO's spec on a hello built by hand: sorted, GREASE out, SNI/ALPN not hashed."""
    hello = tls_hello.ClientHello(
        legacy_version=0x0303,
        ciphers=(0x0A0A, 0x1302, 0x1301),
        extensions=(0x1A1A, 0x0010, 0x0000, 0x002B, 0x000D),
        signature_algorithms=(0x0403, 0x0804),
        alpn=("h2",),
        sni="example.com",
        supported_versions=(0x2A2A, 0x0304, 0x0303),
    )
    part_b = hashlib.sha256(b"1301,1302").hexdigest()[:12]
    part_c = hashlib.sha256(b"000d,002b_0403,0804").hexdigest()[:12]
    assert hello.ja4() == f"t13d0204h2_{part_b}_{part_c}"
    assert hello.ja3() == "771,4866-4865,16-0-43-13,,"
    bare = dataclasses.replace(hello, extensions=(), alpn=(), signature_algorithms=(), supported_versions=())
    assert bare.ja4() == f"t12i020000_{part_b}_000000000000"


def test_hello_split_over_records_and_bytes() -> None:
    data = capture(curl("firefox147"))
    message = tls_hello.handshake_message(data)
    # The same message in two records, as a client may fragment it.
    half = len(message) // 2
    records = b"".join(
        bytes([22, 3, 1]) + len(part).to_bytes(2, "big") + part for part in (message[:half], message[half:])
    )
    assert tls_hello.parse(records) == tls_hello.parse(data)
    for cut in (3, 5, 200, len(records) - 1):
        with pytest.raises(tls_hello.Incomplete):
            tls_hello.parse(records[:cut])
    with pytest.raises(ValueError, match="not a TLS handshake"):
        tls_hello.parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")


def test_alpn_field_of_odd_protocols() -> None:
    assert tls_hello._alpn_chars("http/1.1") == "h1"
    assert tls_hello._alpn_chars("") == "00"
    assert tls_hello._alpn_chars("\xabab") == "a2"  # a non-alphanumeric end: ends of the hex, "ab6162"


@pytest.mark.parametrize("websocket", [False, True], ids=["rest", "websocket"])
def test_every_curl_cffi_target_classifies_as_its_browser(websocket: bool) -> None:
    """The table is complete for curl_cffi 0.17.0: every target, both connection kinds."""
    wrong = {}
    for target in (browser.value for browser in BrowserType):
        ja4 = tls_hello.parse(capture(curl(target, websocket=websocket))).ja4()
        known = browsers.fingerprint_browser(ja4)
        if known is None or known[0] != family_of(target):
            wrong[target] = (ja4, known)
    assert not wrong


def test_sni_flag_does_not_change_the_browser() -> None:
    by_address = tls_hello.parse(capture(curl("chrome146", host="127.0.0.1")))
    assert by_address.sni is None and by_address.ja4()[3:8] == "i1515"  # SNI not sent, nor counted
    assert browsers.fingerprint_browser(by_address.ja4()) == (browsers.CHROMIUM, 133, 146)


CHROME_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/146.0.0.0 Safari/537.36"
)
EDGE_UA = CHROME_UA + " Edg/146.0.3856.62"
FIREFOX_UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:147.0) Gecko/20100101 Firefox/147.0"
SAFARI_UA = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/26.0 Safari/605.1.15"
)
CHROME_HINTS = {
    "sec-ch-ua": '"Chromium";v="146", "Not-A.Brand";v="24", "Google Chrome";v="146"',
    "sec-ch-ua-mobile": "?0",
    "sec-ch-ua-platform": '"Windows"',
}


def test_user_agents() -> None:
    assert browsers.parse_user_agent(CHROME_UA) == browsers.Agent("chrome", 146, "Windows", False)
    assert browsers.parse_user_agent(EDGE_UA) == browsers.Agent("edge", 146, "Windows", False)
    assert browsers.parse_user_agent(FIREFOX_UA) == browsers.Agent("firefox", 147, "Windows", False)
    assert browsers.parse_user_agent(SAFARI_UA) == browsers.Agent("safari", 26, "macOS", False)
    assert browsers.parse_user_agent("python-requests/2.34.2") is None
    assert browsers.parse_user_agent("curl/8.11.1") is None


@pytest.mark.parametrize(
    ("user_agent", "hints", "problem"),
    [
        (CHROME_UA, CHROME_HINTS, None),
        (CHROME_UA, {}, None),
        (
            CHROME_UA,
            {**CHROME_HINTS, "sec-ch-ua": CHROME_HINTS["sec-ch-ua"].replace("146", "120")},
            "Chromium 120",
        ),
        (CHROME_UA, {**CHROME_HINTS, "sec-ch-ua-platform": '"macOS"'}, "platform"),
        (CHROME_UA, {**CHROME_HINTS, "sec-ch-ua-mobile": "?1"}, "mobile"),
        (CHROME_UA, {"sec-ch-ua": '"Microsoft Edge";v="146", "Chromium";v="146"'}, "do not name"),
        (EDGE_UA, {"sec-ch-ua": '"Microsoft Edge";v="146", "Chromium";v="146", "Not?A_Brand";v="99"'}, None),
        (EDGE_UA, CHROME_HINTS, "do not name"),
        (FIREFOX_UA, CHROME_HINTS, "firefox User-Agent with client hints"),
        (SAFARI_UA, {"sec-ch-ua-platform": '"macOS"'}, "safari User-Agent with client hints"),
        (CHROME_UA, {"sec-ch-ua": "garbage"}, "lists no brands"),
    ],
)
def test_client_hints(user_agent: str, hints: dict[str, str], problem: str | None) -> None:
    agent = browsers.parse_user_agent(user_agent)
    assert agent is not None
    found = browsers.hints_problem(agent, hints)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_user_agent_against_fingerprint() -> None:
    chrome146 = "t13d1516h2_8daaf6152771_d8a2da3f94cd"
    ua = browsers.parse_user_agent
    assert browsers.ua_problem(ua(CHROME_UA), chrome146) is None
    assert browsers.ua_problem(ua(EDGE_UA), chrome146) is None  # Edge is Chromium
    assert "firefox" in (browsers.ua_problem(ua(FIREFOX_UA), chrome146) or "")
    assert "chrome 120" in (browsers.ua_problem(ua(CHROME_UA.replace("146", "120")), chrome146) or "")
    assert browsers.ua_problem(ua(CHROME_UA.replace("146", "150")), chrome146) is None  # nearest profile
    assert "names no browser" in (browsers.ua_problem(None, chrome146) or "")


def test_same_browser() -> None:
    chrome146_rest, chrome146_ws = (
        "t13d1516h2_8daaf6152771_d8a2da3f94cd",
        "t13d1515h1_8daaf6152771_0a20fe35d3a5",
    )
    chrome120_rest, firefox147 = (
        "t13d1516h2_8daaf6152771_02713d6af862",
        "t13d1717h2_5b57614c22b0_3cbfd9057e0d",
    )
    assert browsers.same_browser(chrome146_rest, chrome146_ws)
    assert browsers.same_browser(chrome146_rest, "t13i1515" + chrome146_rest[8:])
    assert not browsers.same_browser(chrome146_rest, chrome120_rest)
    assert not browsers.same_browser(chrome146_rest, firefox147)
    assert not browsers.same_browser("t13d181100_85036bcba153_d41ae481755e", chrome146_rest)

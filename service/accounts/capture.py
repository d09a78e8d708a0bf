"""Reading an account's identity from what operators already have: a request copied as cURL, or a HAR.

Browsers' developer tools copy any request "as cURL" in two quotings, and export a page's
traffic as HAR. Both carry everything an account needs: the cookies (`-b`/`--cookie`, as
Chrome writes them, or a `cookie:` header; HAR's cookie header or cookie list), the
User-Agent, the `Sec-CH-UA*` client hints and `Accept-Language`.

    parse_curl(text)            bash (`'…'`, `"…"`, `$'…'`, `\\` continuations) and Windows cmd
                                (Chrome's `^"…^"` with `^\\^"`, Firefox's `"…"` with `""`) quoting
    parse_har(data, host)       a HAR object or its text; the newest request to `host` wins

Pure functions: nothing here touches the network, and what they return still has to pass
`identity.resolve`. Errors are `CaptureError`s whose message names what is wrong, never a
cookie value.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from service.accounts.errors import CaptureError
from service.accounts.shell_words import curl_words

MAX_CAPTURE = 4 * 1024 * 1024  # a HAR of a long session is large; more than this is not one request's copy
_VALUE_OPTIONS = frozenset(
    {
        "-H",
        "--header",
        "-b",
        "--cookie",
        "-A",
        "--user-agent",
        "-e",
        "--referer",
        "-X",
        "--request",
        "-d",
        "--data",
        "--data-raw",
        "--data-binary",
        "--data-ascii",
        "--data-urlencode",
        "--url",
        "-u",
        "--user",
        "-x",
        "--proxy",
        "-o",
        "--output",
        "-F",
        "--form",
        "--connect-timeout",
        "-m",
        "--max-time",
        "--json",
    }
)


@dataclasses.dataclass(frozen=True)
class Capture:
    """One browser request: its URL, headers (lower-case names, in the browser's order), cookies."""

    url: str
    headers: tuple[tuple[str, str], ...]
    cookies: str = dataclasses.field(default="", repr=False)

    def header(self, name: str) -> str:
        """The value of one header ("" when absent)."""
        return next((value for key, value in self.headers if key == name), "")

    def hints(self) -> dict[str, str]:
        """The client hints it carried, in order."""
        return {key: value for key, value in self.headers if key.startswith("sec-ch-ua")}


def _options(words: list[str]) -> Iterator[tuple[str, str]]:
    """(option, value) pairs; a bare word is ("", url). `--opt=value` is split."""
    i = 0
    while i < len(words):
        word = words[i]
        if word.startswith("--") and "=" in word:
            name, _, value = word.partition("=")
            yield name, value
        elif word in _VALUE_OPTIONS:
            if i + 1 >= len(words):
                raise CaptureError(f"the cURL option {word} has no value")
            yield word, words[i + 1]
            i += 1
        elif not word.startswith("-"):
            yield "", word
        i += 1


def parse_curl(text: str) -> Capture:
    """The request a copied cURL command describes."""
    if len(text) > MAX_CAPTURE:
        raise CaptureError(f"the cURL text is longer than {MAX_CAPTURE} characters")
    url = ""
    headers: list[tuple[str, str]] = []
    cookies: list[str] = []
    for option, value in _options(curl_words(text)):
        if option in ("", "--url") and not url:
            url = value
        elif option in ("-H", "--header"):
            name, sep, header_value = value.partition(":")
            if sep and name.strip():
                headers.append((name.strip().lower(), header_value.strip()))
        elif option in ("-b", "--cookie"):
            if "=" not in value:
                raise CaptureError(
                    "the cURL -b option names a cookie file, not cookies; copy the request again"
                )
            cookies.append(value.strip())
        elif option in ("-A", "--user-agent"):
            headers.append(("user-agent", value))
        elif option in ("-e", "--referer"):
            headers.append(("referer", value))
    if not url.startswith(("http://", "https://")):
        raise CaptureError("the cURL command has no http(s) URL")
    header_cookie = [value for name, value in headers if name == "cookie"]
    headers = [(name, value) for name, value in headers if name != "cookie"]
    return Capture(url=url, headers=tuple(headers), cookies="; ".join(cookies + header_cookie))


# -- HAR -----------------------------------------------------------------------------


def _har_object(data: Any) -> Mapping[str, Any]:
    if isinstance(data, str):
        if len(data) > MAX_CAPTURE:
            raise CaptureError(f"the HAR text is longer than {MAX_CAPTURE} characters")
        try:
            data = json.loads(data)
        except ValueError:
            raise CaptureError("the HAR is not JSON") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("log"), Mapping):
        raise CaptureError("the HAR has no `log` object")
    return data


def _host_matches(url: str, host: str) -> bool:
    found = (urlsplit(url).hostname or "").lower()
    return found == host or found.endswith("." + host)


def _newest_request(entries: list[Any], host: str) -> Mapping[str, Any]:
    """The request of the newest entry to `host` (the later one on a tie)."""
    matching = [
        entry
        for entry in entries
        if isinstance(entry, Mapping)
        and isinstance(entry.get("request"), Mapping)
        and _host_matches(str(entry["request"].get("url", "")), host.lower())
    ]
    if not matching:
        raise CaptureError(f"the HAR holds no request to {host}; record it while using the upstream")
    newest = max(enumerate(matching), key=lambda pair: (str(pair[1].get("startedDateTime", "")), pair[0]))[1]
    request: Mapping[str, Any] = newest["request"]
    return request


def _har_headers(request: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The request's headers, lower-cased, without HTTP/2 pseudo-headers."""
    headers: list[tuple[str, str]] = []
    for item in request.get("headers") or []:
        if isinstance(item, Mapping) and not str(item.get("name", "")).startswith(":"):
            headers.append((str(item.get("name", "")).strip().lower(), str(item.get("value", ""))))
    return headers


def parse_har(data: Any, host: str) -> Capture:
    """The newest request of the HAR to `host` (or a subdomain of it)."""
    entries = _har_object(data)["log"].get("entries")
    if not isinstance(entries, list):
        raise CaptureError("the HAR has no `log.entries` list")
    request = _newest_request(entries, host)
    headers = _har_headers(request)
    cookie = "; ".join(value for name, value in headers if name == "cookie")
    if not cookie:
        pairs = [c for c in request.get("cookies") or [] if isinstance(c, Mapping) and c.get("name")]
        cookie = "; ".join(f"{c['name']}={c.get('value', '')}" for c in pairs)
    headers = [(name, value) for name, value in headers if name != "cookie"]
    return Capture(url=str(request.get("url", "")), headers=tuple(headers), cookies=cookie)

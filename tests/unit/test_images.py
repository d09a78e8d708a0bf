"""Image inputs: sniffing, data: URIs, limits (service.images); the SSRF-safe fetcher (workers.image_fetch).

The fetcher is tested against real HTTP servers on loopback. Loopback is exactly what
the SSRF rules refuse, so the tests that need a "public" first hop inject the address
judge: only 127.0.0.1 counts as public there, and 127.0.0.2 (the same machine, another
loopback address) plays the internal host a redirect must not reach.
"""

from __future__ import annotations

import base64
import http.server
import ipaddress
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service import images
from service.errors import InvalidRequest
from service.images import ImageLimits
from workers.image_fetch import ImageFetcher, public_address

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32
PART = "messages[1].content[2].image_url"
LIMITS = ImageLimits(max_bytes=1000, max_per_message=2, url_fetch=True)


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (PNG, "png"),
        (b"\xff\xd8\xff\xe0" + b"\0" * 8, "jpeg"),
        (b"GIF87a....", "gif"),
        (b"GIF89a....", "gif"),
        (b"RIFF\0\0\0\0WEBPVP8 ", "webp"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", None),
        (b"%PDF-1.7", None),
        (b"", None),
    ],
)
def test_sniff(data: bytes, kind: str | None) -> None:
    assert images.sniff(data) == kind


def test_data_uri_type_comes_from_the_bytes_not_the_label() -> None:
    uri = "data:image/jpeg;base64," + base64.b64encode(PNG).decode()
    image = images.parse_image_url(uri, PART, LIMITS)
    assert image.mime == "image/png" and image.data == PNG and image.part == PART


@pytest.mark.parametrize(
    ("url", "code"),
    [
        (
            "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 2000).decode(),
            "image_too_large",
        ),
        ("data:image/png;base64," + base64.b64encode(b"not an image").decode(), "invalid_image_format"),
        ("data:image/png,rawtext", "invalid_image_url"),
        ("data:image/png;base64,!!!", "invalid_image_url"),
        ("file:///etc/passwd", "invalid_image_url"),
        ("", None),
    ],
)
def test_bad_image_urls_name_the_part(url: str, code: str | None) -> None:
    with pytest.raises(InvalidRequest) as info:
        images.parse_image_url(url, PART, LIMITS)
    assert info.value.param == PART and PART in info.value.message
    assert info.value.code == code


def test_url_fetch_off_says_how_to_turn_it_on() -> None:
    with pytest.raises(InvalidRequest) as info:
        images.parse_image_url("https://example.com/a.png", PART, ImageLimits())
    assert info.value.code == "image_url_fetch_disabled" and "IMAGE_URL_FETCH" in info.value.message
    assert (
        images.parse_image_url("https://example.com/a.png", PART, LIMITS).url == "https://example.com/a.png"
    )


@given(st.text(max_size=40), st.integers(min_value=0, max_value=5))
def test_marked_text_is_recognisable(text: str, count: int) -> None:
    marked = images.marked(text, count)
    assert marked.count(images.MARKER) >= count
    assert marked.endswith(text)


def test_park_and_unpark(redis_client: Any) -> None:
    image = images.parse_image_url("data:image/png;base64," + base64.b64encode(PNG).decode(), PART, LIMITS)
    (ref,) = images.park(redis_client, (image,), ttl=30)
    assert ref.size == len(PNG) and ref.mime == "image/png"
    assert 0 < redis_client.ttl(images.image_key(ref.digest)) <= 30
    assert images.unpark(redis_client, images.ImageRef.from_json(ref.to_json())) == PNG
    redis_client.delete(images.image_key(ref.digest))
    with pytest.raises(InvalidRequest) as info:
        images.unpark(redis_client, ref)
    assert info.value.code == "image_expired" and info.value.param == PART


# -- the fetcher --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("240.0.0.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped loopback
        ("::ffff:8.8.8.8", True),
    ],
)
def test_public_address(address: str, public: bool) -> None:
    assert public_address(address) is public


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, dict[str, str], bytes]] = {}  # noqa: RUF012 (per-server copies below)
    seen: list[tuple[str, str]] = []  # noqa: RUF012

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("Host", "")))
        status, headers, body = self.routes.get(self.path, (404, {}, b""))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def _serve(host: str, routes: dict[str, tuple[int, dict[str, str], bytes]]) -> tuple[Any, type[_Handler]]:
    handler = type("Handler", (_Handler,), {"routes": routes, "seen": []})
    server = http.server.ThreadingHTTPServer((host, 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, handler


@pytest.fixture()
def servers() -> Iterator[dict[str, Any]]:
    internal, internal_handler = _serve("127.0.0.2", {"/secret": (200, {}, PNG)})
    port2 = internal.server_address[1]
    public, public_handler = _serve(
        "127.0.0.1",
        {
            "/ok.png": (200, {"Content-Type": "image/png"}, PNG),
            "/big.png": (200, {}, PNG + b"\0" * 5000),
            "/to-internal": (302, {"Location": f"http://127.0.0.2:{port2}/secret"}, b""),
            "/to-name": (302, {"Location": f"http://internal.test:{port2}/secret"}, b""),
            "/loop": (302, {"Location": "/loop"}, b""),
            "/hop": (301, {"Location": "/ok.png"}, b""),
        },
    )
    try:
        yield {
            "base": f"http://images.test:{public.server_address[1]}",
            "public": public_handler,
            "internal": internal_handler,
        }
    finally:
        for server in (public, internal):
            server.shutdown()
            server.server_close()


def _resolver(host: str, port: int) -> list[str]:
    names = {
        "images.test": ["127.0.0.1"],
        "internal.test": ["127.0.0.2"],
        "mixed.test": ["127.0.0.1", "127.0.0.2"],
    }
    if host in names:
        return names[host]
    try:
        return [str(ipaddress.ip_address(host))]  # a literal resolves to itself, as getaddrinfo does
    except ValueError:
        raise OSError("no such host") from None


def _fetcher(**kwargs: Any) -> ImageFetcher:
    options: dict[str, Any] = {
        "max_bytes": 1000,
        "timeout": 5.0,
        "resolver": _resolver,
        "is_allowed": lambda address: address == "127.0.0.1",
    }
    return ImageFetcher(**{**options, **kwargs})


def test_fetch_pins_the_vetted_address_and_keeps_the_host(servers: dict[str, Any]) -> None:
    assert _fetcher().fetch(f"{servers['base']}/hop", PART) == PNG
    port = servers["base"].rsplit(":", 1)[1]
    assert servers["public"].seen == [("/hop", f"images.test:{port}"), ("/ok.png", f"images.test:{port}")]


@pytest.mark.parametrize("path", ["/to-internal", "/to-name"])
def test_a_redirect_to_an_internal_address_is_refused(servers: dict[str, Any], path: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        _fetcher().fetch(f"{servers['base']}{path}", PART)
    assert info.value.param == PART and "non-public address" in info.value.message
    assert servers["internal"].seen == []


def test_a_name_with_any_internal_address_is_refused(servers: dict[str, Any]) -> None:
    port = servers["base"].rsplit(":", 1)[1]
    with pytest.raises(InvalidRequest):
        _fetcher().fetch(f"http://mixed.test:{port}/ok.png", PART)
    assert servers["public"].seen == []


def test_loopback_is_refused_by_default_and_allowed_only_when_private_is_allowed(
    servers: dict[str, Any],
) -> None:
    port = servers["base"].rsplit(":", 1)[1]
    url = f"http://127.0.0.1:{port}/ok.png"
    with pytest.raises(InvalidRequest) as info:
        ImageFetcher(max_bytes=1000, timeout=5.0).fetch(url, PART)
    assert "non-public address" in info.value.message
    assert servers["public"].seen == []
    assert ImageFetcher(max_bytes=1000, timeout=5.0, allow_private=True).fetch(url, PART) == PNG


@pytest.mark.parametrize(
    ("path", "words"),
    [("/big.png", "larger than 1000 bytes"), ("/loop", "more than 3 redirects"), ("/missing", "HTTP 404")],
)
def test_fetch_limits(servers: dict[str, Any], path: str, words: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        _fetcher().fetch(f"{servers['base']}{path}", PART)
    assert words in info.value.message and info.value.param == PART


def test_unresolvable_host() -> None:
    with pytest.raises(InvalidRequest) as info:
        _fetcher().fetch("http://nowhere.test/a.png", PART)
    assert "does not resolve" in info.value.message


def test_a_silent_server_times_out() -> None:
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    try:
        port = listener.getsockname()[1]
        with pytest.raises(InvalidRequest) as info:
            _fetcher(timeout=0.5).fetch(f"http://images.test:{port}/slow.png", PART)
        assert info.value.param == PART
    finally:
        listener.close()


# -- the seams for the other surfaces -------------------------------------------------------


def test_responses_input_image() -> None:
    uri = "data:image/png;base64," + base64.b64encode(PNG).decode()
    image = images.responses_image({"type": "input_image", "image_url": uri}, "input[0].content[1]", LIMITS)
    assert image.data == PNG and image.part == "input[0].content[1].image_url"
    with pytest.raises(InvalidRequest) as info:
        images.responses_image({"type": "input_image", "file_id": "file-1"}, "input[0].content[1]", LIMITS)
    assert info.value.param == "input[0].content[1].file_id"


def test_anthropic_image_blocks() -> None:
    block = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/gif", "data": base64.b64encode(PNG).decode()},
    }
    image = images.anthropic_image(block, "messages.0.content.1", LIMITS)
    assert image.mime == "image/png" and image.part == "messages.0.content.1.source.data"
    url = images.anthropic_image({"source": {"type": "url", "url": "https://e.com/a.png"}}, "m", LIMITS)
    assert url.url == "https://e.com/a.png"
    with pytest.raises(InvalidRequest) as info:
        images.anthropic_image({"source": {"type": "file"}}, "m", LIMITS)
    assert info.value.param == "m.source"


def test_rendered_images() -> None:
    from service.web.images.render import image_item, images_response
    from service.web.responses.objects import image_generation_call

    event = {"type": "image", "url": "https://copilot.microsoft.com/th/id/BCO.x.png", "prompt": "a cat"}
    assert image_item(event) == {"url": event["url"], "revised_prompt": "a cat"}
    assert image_item({**event, "prompt": ""}, data=b"\x01") == {"b64_json": "AQ=="}
    assert images_response(5, [{"url": "u"}]) == {"created": 5, "data": [{"url": "u"}]}
    call = image_generation_call(event, "ig_1", data=b"\x01")
    assert call == {
        "type": "image_generation_call",
        "id": "ig_1",
        "status": "completed",
        "result": "AQ==",
        "url": event["url"],
        "revised_prompt": "a cat",
    }


def test_kblob_upload_body_round_trips_through_the_simulator_parser() -> None:
    import json

    from tests.simulator.kblob import _parts
    from workers.upstream import chathub
    from workers.upstream.errors import UpstreamError

    body, content_type = chathub.kblob_body(
        PNG, conversation_id="51D|BingProd|X", tone="Creative", boundary="b0"
    )
    parts = _parts(content_type, body)
    assert base64.b64decode(parts["imageBase64"]) == PNG
    request = json.loads(parts["knowledgeRequest"])["knowledgeRequest"]
    assert request["invokedSkills"] == ["ImageById"]
    assert request["convoData"] == {"convoid": "51D|BingProd|X", "convotone": "Creative"}
    url = chathub.parse_kblob_response(200, b'{"blobId":"abc","processedBlobId":"abc"}')
    assert url == "https://www.bing.com/images/blob?bcid=abc"
    with pytest.raises(UpstreamError):
        chathub.parse_kblob_response(200, b"{}")


class _Drip(http.server.BaseHTTPRequestHandler):
    """Answers 200 with a large body, then sends it one byte a second (the audit's `/drip`)."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        try:
            for _ in range(120):
                self.wfile.write(b"\0")
                self.wfile.flush()
                time.sleep(1.0)
        except OSError:
            pass  # the fetcher gave up and closed the connection

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize(
    "address",
    [
        "2002:7f00:1::",
        "2002:a9fe:a9fe::",
        "fec0::1",
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        "64:ff9b::7f00:1",
    ],
)
def test_tunnel_and_site_local_addresses_are_not_public(address: str) -> None:
    assert public_address(address) is False


def test_one_deadline_over_the_whole_fetch_even_when_bytes_keep_dripping() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Drip)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    outcome: list[BaseException] = []

    def fetch() -> None:
        try:
            _fetcher(timeout=2.0).fetch(f"http://images.test:{server.server_address[1]}/drip", PART)
        except BaseException as exc:
            outcome.append(exc)

    try:
        worker = threading.Thread(target=fetch, daemon=True)
        worker.start()
        worker.join(30)  # bounded: today's fetch would run until the drip stops (120 s)
        assert not worker.is_alive(), "the fetch outlived its deadline"
        assert len(outcome) == 1 and isinstance(outcome[0], InvalidRequest)
        assert "longer than IMAGE_FETCH_TIMEOUT" in outcome[0].message and outcome[0].param == PART
    finally:
        server.shutdown()
        server.server_close()


class _DripHeaders(http.server.BaseHTTPRequestHandler):
    """Sends its status line and headers one byte a second: only a whole-fetch deadline ends it."""

    def do_GET(self) -> None:
        head = b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"a" * 200 + b"\r\n\r\n"
        try:
            for byte in head:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(1.0)
        except OSError:
            pass

    def log_message(self, *args: Any) -> None:
        pass


WORKER_FETCH = """
from gevent import monkey
monkey.patch_all()
import sys
from service.errors import InvalidRequest
from workers.image_fetch import ImageFetcher
fetcher = ImageFetcher(max_bytes=1000, timeout=2.0, allow_private=True)
try:
    fetcher.fetch(sys.argv[1], "messages[0].content[1].image_url")
except InvalidRequest as exc:
    print(exc.message)
"""


def test_in_the_worker_the_deadline_also_bounds_dripping_headers() -> None:
    import subprocess
    import sys
    from pathlib import Path

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _DripHeaders)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        done = subprocess.run(  # a gevent-patched process, as the worker is
            [sys.executable, "-c", WORKER_FETCH, f"http://127.0.0.1:{server.server_address[1]}/x.png"],
            cwd=Path(__file__).resolve().parents[2],
            capture_output=True,
            text=True,
            timeout=60,  # bounded: the headers alone take over 200 s to arrive
        )
        assert "longer than IMAGE_FETCH_TIMEOUT" in done.stdout, done.stderr[-2000:]
    finally:
        server.shutdown()
        server.server_close()

"""Image input end to end: a screenshot-sized PNG through the gateway to the simulated upstream.

Real gunicorn, real workers, the simulator over real sockets. The simulator records every
`POST /c/api/attachments` upload (bytes, sha256) and its answer says what it "saw", so
these tests prove the image bytes reached the upstream, once per upstream conversation.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import random
import struct
import threading
import zlib
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
import requests

from tests.integration.conftest import Stack, isolated_app
from tests.support.stack import WorkerProcess


def screenshot_png(width: int = 1280, height: int = 800, seed: int = 7) -> bytes:
    """A real PNG of screenshot size: flat bands with noisy rows, so it compresses like one."""
    rng = random.Random(seed)
    rows = []
    for y in range(height):
        if y % 16 == 0:
            line = rng.randbytes(width * 3)
        else:
            shade = (y * 255 // height) & 0xFF
            line = bytes((shade, 200 - shade // 2, 90)) * width
        rows.append(b"\0" + line)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows), 6))
        + chunk(b"IEND", b"")
    )


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def image_message(url: str, text: str = "What is in this screenshot?") -> dict[str, Any]:
    return {
        "role": "user",
        "content": [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}],
    }


def uploads(stack: Stack) -> list[dict[str, Any]]:
    response = requests.get(f"{stack.simulator.http_url}/_sim/attachments", timeout=5)
    response.raise_for_status()
    return list(response.json())


def test_screenshot_reaches_the_upstream_once_per_conversation(gateway: Stack) -> None:
    png = screenshot_png()
    assert len(png) > 100_000
    first = gateway.post({"model": "Balanced", "messages": [image_message(data_uri(png))]})
    assert first.status_code == 200, first.text
    answer = first.json()["choices"][0]["message"]["content"]
    assert f"I see an image ({len(png)} bytes)" in answer
    (upload,) = uploads(gateway)
    assert upload["bytes"] == len(png)
    assert upload["sha256"] == hashlib.sha256(png).hexdigest()
    assert upload["used"] == 1
    if gateway.dialect == "copilot":  # Copilot: `/c/api/attachments`, an image part before the text
        assert upload["contentType"] == "image/png"
        send = gateway.simulator.last_send()
        assert send is not None
        assert [part["type"] for part in send["content"]] == ["image", "text"]
        assert send["content"][0]["url"] == upload["url"]
    else:  # ChatHub: `/images/kblob`, the blob URL as the message's imageUrl
        message = (gateway.simulator.last_invocation() or {})["message"]
        assert message["imageUrl"] == message["originalImageUrl"] == upload["url"]

    # The stateless client re-sends the history with the image: it continues, nothing re-uploaded.
    conversation_id = first.headers["X-Conversation-Id"]
    history = [image_message(data_uri(png)), {"role": "assistant", "content": answer}]
    second = gateway.post(
        {"model": "Balanced", "messages": [*history, {"role": "user", "content": "And the colours?"}]}
    )
    assert second.status_code == 200, second.text
    assert second.headers["X-Conversation-Id"] == conversation_id
    assert len(uploads(gateway)) == 1
    if gateway.dialect == "copilot":
        assert [part["type"] for part in (gateway.simulator.last_send() or {})["content"]] == ["text"]
    else:
        assert "imageUrl" not in (gateway.simulator.last_invocation() or {})["message"]

    # The same screenshot again in a new message of the same conversation: its earlier URL is reused.
    third = gateway.post(
        {"model": "Balanced", "messages": [image_message(data_uri(png), "Again?")]},
        headers={"X-Conversation-Id": conversation_id},
    )
    assert third.status_code == 200, third.text
    assert f"I see an image ({len(png)} bytes)" in third.json()["choices"][0]["message"]["content"]
    (again,) = uploads(gateway)
    assert again["used"] == 2


@pytest.mark.dialects("copilot")
@pytest.mark.parametrize(
    ("url", "code"),
    [
        (data_uri(b"GIF89a" + b"\0" * 10, "image/png"), None),  # declared png, really gif: accepted as gif
        (data_uri(b"%PDF-1.4 not an image", "image/png"), "invalid_image_format"),
        ("data:image/png;base64,@@@@", "invalid_image_url"),
        ("https://example.com/cat.png", "image_url_fetch_disabled"),
        ("ftp://example.com/cat.png", "invalid_image_url"),
    ],
)
def test_bad_images_are_400s_naming_the_part(gateway: Stack, url: str, code: str | None) -> None:
    messages = [{"role": "system", "content": "Be brief."}, image_message(url)]
    response = gateway.post({"model": "Balanced", "messages": messages})
    if code is None:
        assert response.status_code == 200, response.text
        assert uploads(gateway)[-1]["contentType"] == "image/gif"
        return
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "messages[1].content[1].image_url"
    assert error["code"] == code
    assert "messages[1].content[1].image_url" in error["message"]
    if code == "image_url_fetch_disabled":
        assert "IMAGE_URL_FETCH" in error["message"]


@pytest.mark.dialects("copilot")
def test_too_many_and_too_large_images(gateway: Stack) -> None:
    tiny = data_uri(screenshot_png(8, 8))
    content: list[dict[str, Any]] = [{"type": "text", "text": "five"}]
    content += [{"type": "image_url", "image_url": {"url": tiny}}] * 5
    response = gateway.post({"model": "Balanced", "messages": [{"role": "user", "content": content}]})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages[0].content[5].image_url"
    assert response.json()["error"]["code"] == "too_many_images"
    with isolated_app(gateway, "images-small", IMAGE_MAX_BYTES="1000") as (server, _env):
        big = requests.post(
            f"{server.url}/v1/chat/completions",
            json={"model": "Balanced", "messages": [image_message(data_uri(screenshot_png()))]},
            timeout=30,
        )
    assert big.status_code == 400
    assert big.json()["error"]["code"] == "image_too_large"
    assert big.json()["error"]["param"] == "messages[0].content[1].image_url"


@pytest.mark.dialects("bing")
def test_chathub_takes_one_image_per_message(gateway: Stack) -> None:
    tiny = {"type": "image_url", "image_url": {"url": data_uri(screenshot_png(8, 8))}}
    content = [{"type": "text", "text": "two"}, tiny, tiny]
    response = gateway.post({"model": "Balanced", "messages": [{"role": "user", "content": content}]})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "messages[0].content[2].image_url" and error["code"] == "too_many_images"


# -- image URLs, fetched by the worker -------------------------------------------------


class _Images(http.server.BaseHTTPRequestHandler):
    png = b""
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).hits.append(self.path)
        if self.path.startswith("/hop/"):
            left = int(self.path.rsplit("/", 1)[-1])
            target = "/shot.png" if left == 0 else f"/hop/{left - 1}"
            self.send_response(302)
            self.send_header("Location", target)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(self.png)))
        self.end_headers()
        self.wfile.write(self.png)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def image_server() -> Iterator[tuple[str, type[_Images]]]:
    handler = type("Handler", (_Images,), {"png": screenshot_png(320, 200), "hits": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.dialects("copilot")
@pytest.mark.parametrize("allow_private", ["0", "1"])
def test_image_urls_are_fetched_by_the_worker_and_loopback_is_refused(
    gateway: Stack, image_server: tuple[str, type[_Images]], allow_private: str
) -> None:
    base, handler = image_server
    overrides = {"IMAGE_URL_FETCH": "on", "IMAGE_URL_ALLOW_PRIVATE": allow_private}
    with isolated_app(gateway, f"images-fetch-{allow_private}", **overrides) as (server, env):
        worker = WorkerProcess(env).start()
        try:
            response = requests.post(
                f"{server.url}/v1/chat/completions",
                json={"model": "Balanced", "messages": [image_message(f"{base}/hop/2")]},
                timeout=60,
            )
        finally:
            worker.stop()
    if allow_private == "0":
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == "messages[0].content[1].image_url"
        assert "non-public address" in error["message"]
        assert handler.hits == []  # refused before any connection
        assert uploads(gateway) == []
        return
    assert response.status_code == 200, response.text
    assert handler.hits == ["/hop/2", "/hop/1", "/hop/0", "/shot.png"]
    (upload,) = uploads(gateway)
    assert upload["sha256"] == hashlib.sha256(handler.png).hexdigest()


# -- image generation --------------------------------------------------------------------


@pytest.mark.dialects("copilot")
@pytest.mark.parametrize("response_format", ["url", "b64_json"])
def test_images_generations(gateway: Stack, response_format: str) -> None:
    response = gateway.post(
        {
            "prompt": "a red apple on a desk",
            "model": "dall-e-3",
            "size": "1024x1024",
            "response_format": response_format,
        },
        path="/v1/images/generations",
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"created", "data"} and isinstance(body["created"], int)
    (item,) = body["data"]
    assert item["revised_prompt"] == "a red apple on a desk"
    if response_format == "url":
        assert set(item) == {"url", "revised_prompt"}
        assert item["url"].startswith("https://copilot.microsoft.com/th/id/BCO.")
    else:
        assert set(item) == {"b64_json", "revised_prompt"}
        assert base64.b64decode(item["b64_json"]).startswith(b"\x89PNG\r\n\x1a\n")
    send = gateway.simulator.last_send()
    assert send is not None and send["content"][-1]["text"] == "Create an image: a red apple on a desk"


@pytest.mark.dialects("copilot")
def test_images_generations_with_the_openai_sdk(gateway: Stack) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
    result = client.images.generate(prompt="a lighthouse at dusk", n=1, response_format="b64_json")
    assert result.data is not None and result.data[0].b64_json
    assert result.data[0].revised_prompt == "a lighthouse at dusk"


@pytest.mark.dialects("copilot")
def test_spent_image_quota_is_429_with_retry_after(gateway: Stack) -> None:
    response = gateway.post({"prompt": "[sim:image_throttled] a cat"}, path="/v1/images/generations")
    assert response.status_code == 429, response.text
    assert int(response.headers["Retry-After"]) >= 60
    assert response.json()["error"]["code"] == "image_quota_exceeded"


@pytest.mark.dialects("copilot")
def test_an_answer_without_an_image_is_an_error(gateway: Stack) -> None:
    # `[sim:no_image]`: the simulated Copilot answers the request to draw in words only.
    response = gateway.post({"prompt": "[sim:no_image] words please"}, path="/v1/images/generations")
    assert response.status_code == 502, response.text
    assert response.json()["error"]["code"] == "no_image_generated"


@pytest.mark.parametrize(
    ("extra", "param"),
    [({"n": 2}, "n"), ({"response_format": "png"}, "response_format"), ({"prompt": ""}, "prompt")],
)
def test_images_generations_validation(gateway: Stack, extra: dict[str, Any], param: str) -> None:
    response = gateway.post({"prompt": "a cat", **extra}, path="/v1/images/generations")
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


@pytest.mark.dialects("bing")
def test_images_generations_needs_copilot(gateway: Stack) -> None:
    response = gateway.post({"prompt": "a cat"}, path="/v1/images/generations")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "image_generation_unsupported"


@pytest.mark.dialects("copilot")
def test_images_in_chat_keep_their_markdown_and_extension_field(gateway: Stack) -> None:
    response = gateway.post(
        {"model": "copilot", "messages": [{"role": "user", "content": "Draw an image: a boat"}]}
    )
    assert response.status_code == 200, response.text
    message = response.json()["choices"][0]["message"]
    (image,) = message["images"]
    assert f"({image['url']})" in message["content"]


@pytest.mark.dialects("copilot")
@pytest.mark.parametrize("stream", [False, True])
def test_images_drawn_in_responses_are_image_generation_call_items(gateway: Stack, stream: bool) -> None:
    from tests.integration.conftest import sse_data, sse_lines

    body = {"model": "copilot", "input": "Draw an image: a boat", "stream": stream}
    response = gateway.post(body, path="/v1/responses", stream=stream)
    assert response.status_code == 200, response.text
    if stream:
        events = [event for event in sse_data(sse_lines(response)) if isinstance(event, dict)]
        final = next(event["response"] for event in events if event.get("type") == "response.completed")
    else:
        final = response.json()
    message, image = final["output"]
    assert message["type"] == "message"
    assert image["type"] == "image_generation_call" and image["status"] == "completed"
    assert image["id"].startswith("ig_") and image["url"]
    assert f"({image['url']})" in message["content"][0]["text"]


@pytest.mark.dialects("copilot")
def test_a_streamed_turn_with_an_image(gateway: Stack) -> None:
    from tests.integration.conftest import sse_data, sse_lines, streamed_text

    png = screenshot_png(64, 40)
    messages = [image_message(data_uri(png), "")]  # a pasted screenshot with no words
    response = gateway.post({"model": "copilot", "messages": messages, "stream": True}, stream=True)
    assert response.status_code == 200
    text = streamed_text(sse_data(sse_lines(response)))
    assert f"I see an image ({len(png)} bytes)" in text
    (upload,) = uploads(gateway)
    assert upload["sha256"] == hashlib.sha256(png).hexdigest()


def test_responses_and_messages_images_reach_the_upstream(gateway: Stack) -> None:
    """`input_image` (Responses) and `image` blocks (Messages) take the same path as `image_url`."""
    png = screenshot_png(64, 32, seed=3)
    responses = gateway.post(
        {
            "model": "copilot" if gateway.dialect == "copilot" else "Balanced",
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "What is this?"},
                        {"type": "input_image", "image_url": data_uri(png)},
                    ],
                }
            ],
        },
        path="/v1/responses",
    )
    assert responses.status_code == 200, responses.text
    assert f"I see an image ({len(png)} bytes)" in responses.json()["output"][0]["content"][0]["text"]
    source = {"type": "base64", "media_type": "image/png", "data": base64.b64encode(png).decode()}
    messages = gateway.post(
        {
            "model": "claude-3-haiku",
            "max_tokens": 100,
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image", "source": source}, {"type": "text", "text": "And?"}],
                }
            ],
        },
        path="/v1/messages",
    )
    assert messages.status_code == 200, messages.text
    assert f"I see an image ({len(png)} bytes)" in messages.json()["content"][0]["text"]
    sent = uploads(gateway)
    assert [u["sha256"] for u in sent] == [hashlib.sha256(png).hexdigest()] * 2  # one per conversation

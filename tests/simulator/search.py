"""The `[sim:search]` turn's content: the A7.2 web-search step and a cited answer.

Two fixed sources stand in for search results so the frames are deterministic; the
prompt becomes the search query. Everything here is pure frame content; `turns` decides
when each piece is sent.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any
from urllib.parse import urlsplit

from tests.simulator import chathub

SOURCES = (
    ("Simulated source one", "https://example.com/sim/one"),
    ("Simulated source two", "https://example.org/sim/two"),
)


def answer_text(prompt: str) -> str:
    """The answer with `[^N^]` footnote markers, each marker a word of its own."""
    return f"Here is what I found about {prompt} [^1^] and a second source agrees [^2^]."


def card_text(text: str) -> str:
    """The card version of (a prefix of) the answer: reference lines, then `[^N^][N]` markers."""
    references = "".join(f'[{index}]: {url} ""\n' for index, (_, url) in enumerate(SOURCES, start=1))
    for index in range(1, len(SOURCES) + 1):
        text = text.replace(f"[^{index}^]", f"[^{index}^][{index}]")
    return f"{references}\n{text}"


def attributions(prompt: str) -> list[dict[str, Any]]:
    """`sourceAttributions`, ordered so marker N is entry N-1."""
    return [
        {
            "providerDisplayName": title,
            "seeMoreUrl": url,
            "urlSignature": base64.b64encode(hashlib.sha256(url.encode()).digest()).decode(),
            "searchQuery": prompt,
            "provider": "search_web",
        }
        for title, url in SOURCES
    ]


def learn_more_block() -> dict[str, Any]:
    """The trailing `AttributionsTextBlockID` card block of the final answer."""
    links = " ".join(
        f"[{index}. {urlsplit(url).hostname}]({url})" for index, (_, url) in enumerate(SOURCES, start=1)
    )
    return {
        "type": "TextBlock",
        "id": "AttributionsTextBlockID",
        "size": "small",
        "text": f"Learn more: {links}",
        "wrap": True,
    }


def _results(prompt: str) -> dict[str, Any]:
    return {
        "web_search_results": [
            {"title": title, "snippets": [f"What {title.lower()} says about {prompt}."], "url": url}
            for title, url in SOURCES
        ]
    }


def query_message(prompt: str, *, request_id: str, now: float) -> dict[str, Any]:
    """The `InternalSearchQuery` progress message ("Searching the web for: `q`")."""
    text = f"Searching the web for: `{prompt}`"
    message = chathub.bot_message(
        text=text,
        message_id=chathub.new_id(),
        request_id=request_id,
        now=now,
        offense="None",
        message_type="InternalSearchQuery",
    )
    message["hiddenText"] = prompt
    message["adaptiveCards"] = [chathub.progress_card(text)]
    message["invocation"] = f'search_web(query="{prompt}")'
    return message


def result_message(prompt: str, *, request_id: str, now: float, final: bool = False) -> dict[str, Any]:
    """The `InternalSearchResult` message; in the type 2 it also carries `groundingInfo`."""
    results = _results(prompt)
    text = json.dumps(results, ensure_ascii=False)
    message = chathub.bot_message(
        text=text,
        message_id=chathub.new_id(),
        request_id=request_id,
        now=now,
        offense="None",
        message_type="InternalSearchResult",
    )
    message["hiddenText"] = f"search_web('{prompt}') was invoked and returned:\n```json\n{text}\n```"
    if final:
        message["groundingInfo"] = {
            "web_search_results": [
                {**result, "index": str(index), "context": result["snippets"][0], "lastUpdatedDate": None}
                for index, result in enumerate(results["web_search_results"], start=1)
            ]
        }
    return message


def loader_message(*, request_id: str, now: float) -> dict[str, Any]:
    """The `InternalLoaderMessage` ("Generating answers for you...")."""
    message = chathub.bot_message(
        text=chathub.LOADER_TEXT,
        message_id=chathub.new_id(),
        request_id=request_id,
        now=now,
        offense="None",
        message_type="InternalLoaderMessage",
    )
    message["hiddenText"] = chathub.LOADER_TEXT
    return message


def render_card_message(*, request_id: str, now: float) -> dict[str, Any]:
    """The trailing `RenderCardRequest` Bing appends to search answers in the type 2."""
    message = chathub.bot_message(
        text="",
        message_id=chathub.new_id(),
        request_id=request_id,
        now=now,
        offense="None",
        message_type="RenderCardRequest",
    )
    message["hiddenText"] = json.dumps({"cardType": "none"})
    return message

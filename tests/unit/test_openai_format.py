"""The chat.completion and chat.completion.chunk objects, key for key as OpenAI sends them."""

from __future__ import annotations

from service.events import Citation, Delta, Done
from service.web.chat import render as fmt
from service.web.pipeline import answer as neutral
from service.web.pipeline.sse import DONE, frame


def test_completion_has_every_openai_key() -> None:
    body = fmt.completion(
        "chatcmpl-x",
        model="gpt-4",
        created=123,
        content="Hi",
        finish_reason="stop",
        annotations=[],
        usage=neutral.usage(5, 1),
    )
    assert body == {
        "id": "chatcmpl-x",
        "object": "chat.completion",
        "created": 123,
        "model": "gpt-4",
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hi", "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    }


def test_chunks_without_usage_carry_no_usage_key() -> None:
    chunks = fmt.ChunkBuilder("chatcmpl-x", model="Creative", created=7)
    first = chunks.role()
    assert "usage" not in first
    assert first["object"] == "chat.completion.chunk"
    assert first["system_fingerprint"] is None
    assert first["choices"] == [
        {
            "index": 0,
            "delta": {"role": "assistant", "content": "", "refusal": None},
            "logprobs": None,
            "finish_reason": None,
        }
    ]
    assert chunks.content("Hel")["choices"][0]["delta"] == {"content": "Hel"}
    finish = chunks.finish("content_filter")["choices"][0]
    assert finish["delta"] == {} and finish["finish_reason"] == "content_filter"


def test_include_usage_puts_null_usage_on_every_chunk_and_a_final_usage_chunk() -> None:
    chunks = fmt.ChunkBuilder("chatcmpl-x", model="Creative", created=7, include_usage=True)
    assert chunks.role()["usage"] is None
    assert chunks.content("a")["usage"] is None
    assert chunks.finish("stop")["usage"] is None
    last = chunks.usage(neutral.usage(3, 4))
    assert last["choices"] == []
    assert last["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


def test_annotations_span_the_first_marker_or_the_whole_content() -> None:
    content = "Cats purr[^1^]. Dogs bark[^2^][^1^]."
    citations = [
        {"type": "citation", "index": 1, "url": "https://a", "title": "A"},
        {"type": "citation", "index": 2, "url": "https://b", "title": "B"},
        {"type": "citation", "index": 1, "url": "https://a", "title": "A"},
        {"type": "citation", "index": 3, "url": "https://c", "title": "C"},
    ]
    result = neutral.citation_annotations(content, citations)
    assert [a["url_citation"]["url"] for a in result] == ["https://a", "https://b", "https://c"]
    first = result[0]["url_citation"]
    assert content[first["start_index"] : first["end_index"]] == "[^1^]"
    assert first["start_index"] == content.index("[^1^]")
    second = result[1]["url_citation"]
    assert content[second["start_index"] : second["end_index"]] == "[^2^]"
    assert result[2] == {
        "type": "url_citation",
        "url_citation": {"url": "https://c", "title": "C", "start_index": 0, "end_index": len(content)},
    }


def test_annotation_chunk_carries_only_annotations() -> None:
    chunks = fmt.ChunkBuilder("chatcmpl-x", model="Creative", created=7)
    items = neutral.citation_annotations("x[^1^]", [{"index": 1, "url": "u", "title": "t"}])
    assert chunks.annotations(items)["choices"][0]["delta"] == {"annotations": items}


def test_answer_accumulates_events_and_counts_usage() -> None:
    answer = neutral.Answer([{"role": "user", "content": "hello world"}])
    for event in (
        Delta("Hi"),
        Citation(1, "u", "t"),
        Delta(" there[^1^]"),
        Done("Hi there[^1^]", "content_filter"),
    ):
        answer.add(event)
    assert answer.content == "Hi there[^1^]"
    assert answer.finish_reason == "content_filter"
    assert answer.annotations()[0]["url_citation"]["start_index"] == len("Hi there")
    usage = answer.usage()
    assert usage["prompt_tokens"] == 3 + 1 + 2 + 3
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_answer_falls_back_to_done_text() -> None:
    answer = neutral.Answer([])
    answer.add(Done("whole"))
    assert answer.content == "whole"


def test_sse_frames() -> None:
    assert frame({"a": "é\n"}) == 'data: {"a":"é\\n"}\n\n'
    assert frame(DONE) == "data: [DONE]\n\n"
    assert (
        frame(comment="Searching the web for: cats\nand dogs\r\n")
        == ": Searching the web for: cats and dogs\n\n"
    )

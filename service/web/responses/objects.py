"""The Responses API's objects: the `response` and its output items, as openai-python types them.

Shapes follow `openai.types.responses` exactly (every key OpenAI sends, even when empty),
because the SDK, the Agents SDK and Codex CLI parse them strictly. The same objects are
a non-streamed answer's body, a stream's `response.*` payloads and what is stored for
`GET /v1/responses/{id}`; `render` sends them as stream events.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping
from typing import Any

from service.errors import ApiError
from service.tokens import count_messages
from service.turns import new_message_id, new_token
from service.web.pipeline.answer import Answer
from service.web.responses.parse import ResponsesRequest


def image_generation_call(event: Mapping[str, Any], item_id: str, *, data: bytes | None) -> dict[str, Any]:
    """A Responses `image_generation_call` output item for a relayed `image` event.

    OpenAI's item carries the image as base64 in `result`; `data` is the fetched bytes, or
    None when they were not fetched (then `result` is null and the extension field `url`
    says where the image is). Responses renders chat-generated images with `data=None`:
    fetching every image's bytes inside a response would hold the answer up, and the URL
    is served by the upstream.
    """
    item: dict[str, Any] = {
        "type": "image_generation_call",
        "id": item_id,
        "status": "completed",
        "result": base64.b64encode(data).decode() if data is not None else None,
        "url": event.get("url"),
    }
    prompt = str(event.get("prompt") or "").strip()
    if prompt:
        item["revised_prompt"] = prompt
    return item


def usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    """The Responses API usage object."""
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def citation_annotations(answer: Answer) -> list[dict[str, Any]]:
    """Citations as the Responses API's flat `url_citation` annotations."""
    return [{"type": "url_citation", **item["url_citation"]} for item in answer.annotations()]


def output_text(text: str, notes: list[dict[str, Any]]) -> dict[str, Any]:
    """One `output_text` content part."""
    return {"type": "output_text", "text": text, "annotations": notes, "logprobs": []}


def message_item(item_id: str, status: str, content: list[dict[str, Any]]) -> dict[str, Any]:
    """The assistant `message` output item."""
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def function_call_item(call: Mapping[str, Any], status: str = "completed") -> dict[str, Any]:
    """A relayed tool call as a `function_call` output item (its id derived from the call id)."""
    return {
        "id": "fc_" + str(call["id"]).removeprefix("call_"),
        "type": "function_call",
        "status": status,
        "call_id": call["id"],
        "name": call["name"],
        "arguments": call["arguments"] if status == "completed" else "",
    }


def incomplete(answer: Answer) -> dict[str, Any] | None:
    """`incomplete_details` of an answer the gateway cut at `max_output_tokens`."""
    return {"reason": "max_output_tokens"} if answer.finish_reason == "length" else None


def error_object(error: ApiError) -> dict[str, Any]:
    """A response's `error`: OpenAI's codes are few, so the wire code keeps its meaning."""
    code = "rate_limit_exceeded" if error.status == 429 else "server_error"
    if error.status == 400:
        code = "invalid_prompt"
    return {"code": code, "message": error.message}


class ResponseBuilder:
    """Builds one response's objects; fixes its ids, request echo and creation time once."""

    def __init__(
        self,
        response_id: str,
        item_id: str,
        req: ResponsesRequest,
        *,
        model: str,
        conversation_id: str,
        created_at: int | None = None,
    ) -> None:
        self.response_id = response_id
        self.item_id = item_id
        self.req = req
        self.model = model
        self.created_at = created_at or int(time.time())  # the turn's: a re-rendered response matches
        self.conversation_id = conversation_id
        self.background = req.background

    def response(
        self,
        status: str,
        output: list[dict[str, Any]] | None = None,
        *,
        usage: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
        incomplete_details: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The `response` object in the given state."""
        req = self.req
        echo = req.echo
        return {
            "id": self.response_id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": self.background,
            "completed_at": int(time.time()) if status in ("completed", "incomplete") else None,
            "conversation": {"id": self.conversation_id} if req.conversation else None,
            "error": error,
            "incomplete_details": incomplete_details,
            "instructions": req.instructions,
            "max_output_tokens": echo.get("max_output_tokens"),
            "max_tool_calls": None,
            "model": self.model,
            "output": output or [],
            "parallel_tool_calls": echo.get("parallel_tool_calls", True),
            "previous_response_id": req.previous_response_id,
            "reasoning": echo.get("reasoning") or {"effort": None, "summary": None},
            "service_tier": "default",
            "store": req.store,
            "temperature": echo.get("temperature", 1.0),
            "text": echo.get("text") or {"format": {"type": "text"}},
            "tool_choice": echo.get("tool_choice", "auto"),
            "tools": echo.get("tools", []),
            "top_p": echo.get("top_p", 1.0),
            "truncation": "disabled",
            "usage": usage,
            "user": echo.get("user"),
            "metadata": req.metadata,
        }

    def usage(self, answer: Answer) -> dict[str, Any]:
        """Token usage of the request and this answer."""
        return usage(count_messages(self.req.chat.messages), answer.usage()["completion_tokens"])

    def completed(self, answer: Answer) -> dict[str, Any]:
        """The finished response for a whole answer: its text message, then its function calls."""
        part = output_text(answer.content, citation_annotations(answer))
        items = (
            [message_item(self.item_id, "completed", [part])]
            if answer.content or not answer.tool_calls
            else []
        )
        items += [function_call_item(call) for call in answer.tool_calls]
        # Copilot's generated images: the same images the text links to, as OpenAI's output items.
        items += [image_generation_call(image, f"ig_{new_token()}", data=None) for image in answer.images]
        details = incomplete(answer)
        status = "incomplete" if details else "completed"
        return self.response(status, items, usage=self.usage(answer), incomplete_details=details)

    def failed(self, error: ApiError) -> dict[str, Any]:
        """The response of a turn that failed."""
        return self.response("failed", error=error_object(error))

    def input_items(self) -> list[dict[str, Any]]:
        """The request's input as stored input items (`message` items with text parts)."""
        items = []
        for message in self.req.input_items:
            kind = "output_text" if message["role"] == "assistant" else "input_text"
            items.append(
                {
                    "id": new_message_id(),
                    "type": "message",
                    "role": message["role"],
                    "status": "completed",
                    "content": [{"type": kind, "text": message["content"]}],
                }
            )
        return items

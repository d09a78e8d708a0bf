"""Narrowing for the OpenAI and Anthropic SDKs' union-typed results, so SDK-driven tests type-check.

The SDKs type a response's output, a conversation's items and a message's content blocks as wide
unions. A test knows which member it got; these helpers say so once, as an assertion that fails
naming the type it saw, instead of each test repeating `assert isinstance(...)` before every read.
"""

from __future__ import annotations

from typing import Any, TypeVar

from anthropic.types import TextBlock
from openai.types.conversations import Message as ConversationMessage
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseInputMessageItem,
    ResponseOutputMessage,
    ResponseOutputText,
)

T = TypeVar("T")


def narrow(value: object, kind: type[T]) -> T:
    """The value as `kind`, or an AssertionError naming what it was instead."""
    assert isinstance(value, kind), f"expected {kind.__name__}, got {type(value).__name__}: {value!r}"
    return value


def error_body(error: Exception) -> dict[str, Any]:
    """The parsed JSON body of an SDK's APIStatusError (OpenAI: the `error` object; Anthropic: the whole)."""
    return narrow(getattr(error, "body", None), dict)


def stored(value: object) -> str:
    """A Redis value the test expects to exist (the stack's client returns bytes)."""
    return narrow(value, bytes).decode()


def output_message(item: object) -> ResponseOutputMessage:
    """A Responses output item that must be the assistant's message."""
    return narrow(item, ResponseOutputMessage)


def output_text(item: object, index: int = 0) -> ResponseOutputText:
    """The `index`th content part of a Responses output message, which must be output_text."""
    return narrow(output_message(item).content[index], ResponseOutputText)


def function_call(item: object) -> ResponseFunctionToolCall:
    """A Responses output item that must be a function call."""
    return narrow(item, ResponseFunctionToolCall)


def input_role(item: object) -> str:
    """The role of a stored Responses input item (a message: input or output)."""
    assert isinstance(item, ResponseInputMessageItem | ResponseOutputMessage), f"not a message: {item!r}"
    return item.role


def conversation_message(item: object) -> ConversationMessage:
    """A Conversations API item that must be a message."""
    return narrow(item, ConversationMessage)


def conversation_text(item: object) -> str:
    """The text of a conversation message's first content part."""
    part = conversation_message(item).content[0]
    text = getattr(part, "text", None)
    assert isinstance(text, str), f"content part without text: {part!r}"
    return text


def text_block(block: object) -> TextBlock:
    """An Anthropic content block that must be text (ParsedTextBlock is a TextBlock too)."""
    return narrow(block, TextBlock)

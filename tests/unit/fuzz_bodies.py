"""Hypothesis strategies for Chat Completions request bodies: valid ones, ones with one bad field,
and arbitrary JSON in every field. Used by `test_request_fuzz` (and reusable by other surfaces).

"Valid" means accepted by this gateway: OpenAI-valid values it cannot honour but accepts
(tools, response_format, seed...), never the ones it must refuse (`n` > 1, `logprobs: true`,
audio parts) — those are among the bad values, with the param they must be named by.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

NAME = st.from_regex(r"\A[a-zA-Z0-9_-]{1,64}\Z")
SHORT = st.text(max_size=12)
TEXT = st.text(min_size=1, max_size=24).map(lambda s: "q" + s)
NONE = st.none()

JSON_LEAF = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
JSON_ANY = st.recursive(
    JSON_LEAF,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(SHORT, inner, max_size=4),
    max_leaves=10,
)


def _maybe(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with any subset of `fields`."""
    return st.fixed_dictionaries({}, optional=fields)


def _nullable(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return strategy | NONE


# -- valid values ----------------------------------------------------------------------

TOOL = st.fixed_dictionaries(
    {
        "type": st.just("function"),
        "function": st.fixed_dictionaries(
            {"name": NAME},
            optional={
                "description": SHORT,
                "parameters": st.just({"type": "object", "properties": {}}),
                "strict": _nullable(st.booleans()),
            },
        ),
    }
)
TEXT_PARTS = st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": SHORT}), min_size=1, max_size=3)
TOOL_CALL = st.fixed_dictionaries(
    {
        "id": SHORT,
        "type": st.just("function"),
        "function": st.fixed_dictionaries({"name": NAME, "arguments": SHORT}),
    }
)

EARLIER_MESSAGE = st.one_of(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "developer", "user"]), "content": SHORT | TEXT_PARTS},
        optional={"name": SHORT},
    ),
    st.fixed_dictionaries(
        {"role": st.just("assistant")},
        optional={
            "content": _nullable(SHORT | TEXT_PARTS),
            "name": SHORT,
            "refusal": _nullable(SHORT),
            "tool_calls": st.lists(TOOL_CALL, max_size=2),
        },
    ),
    st.fixed_dictionaries({"role": st.just("tool"), "content": SHORT | TEXT_PARTS, "tool_call_id": SHORT}),
    st.fixed_dictionaries({"role": st.just("function"), "name": SHORT, "content": _nullable(SHORT)}),
)
LAST_MESSAGE = st.fixed_dictionaries(
    {"role": st.just("user"), "content": TEXT | TEXT.map(lambda t: [{"type": "text", "text": t}])},
    optional={"name": SHORT},
)
MESSAGES = st.tuples(st.lists(EARLIER_MESSAGE, max_size=5), LAST_MESSAGE).map(lambda p: [*p[0], p[1]])

VALID_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "stream": _nullable(st.booleans()),
    "stream_options": _nullable(_maybe(include_usage=_nullable(st.booleans()))),
    "temperature": _nullable(st.floats(0, 2) | st.integers(0, 2)),
    "top_p": _nullable(st.floats(0, 1)),
    "presence_penalty": _nullable(st.floats(-2, 2)),
    "frequency_penalty": _nullable(st.floats(-2, 2)),
    "max_tokens": _nullable(st.integers(1, 10**9)),
    "max_completion_tokens": _nullable(st.integers(1, 10**9)),
    "n": _nullable(st.just(1)),
    "stop": _nullable(SHORT | st.lists(SHORT, max_size=4)),
    "response_format": st.sampled_from([{"type": "text"}, {"type": "json_object"}])
    | st.fixed_dictionaries(
        {
            "type": st.just("json_schema"),
            "json_schema": st.fixed_dictionaries(
                {"name": NAME},
                optional={
                    "schema": st.just({"type": "object"}),
                    "strict": st.booleans(),
                    "description": SHORT,
                },
            ),
        }
    ),
    "tools": st.lists(TOOL, max_size=3),
    "tool_choice": st.sampled_from(["none", "auto", "required"])
    | st.fixed_dictionaries({"type": st.just("function"), "function": st.fixed_dictionaries({"name": NAME})}),
    "parallel_tool_calls": st.booleans(),
    "logit_bias": st.dictionaries(st.integers(0, 200_000).map(str), st.floats(-100, 100), max_size=3),
    "logprobs": _nullable(st.just(False)),
    "seed": _nullable(st.integers(-(2**63), 2**63 - 1)),
    "user": SHORT,
    "metadata": st.dictionaries(st.text(max_size=64), st.text(max_size=512), max_size=16),
    "store": _nullable(st.booleans()),
    "modalities": st.lists(st.sampled_from(["text", "audio"]), max_size=2),
    "reasoning_effort": st.sampled_from(["minimal", "low", "medium", "high"]),
    "verbosity": st.sampled_from(["low", "medium", "high"]),
    "service_tier": st.sampled_from(["auto", "default", "flex", "priority"]),
    "prediction": st.fixed_dictionaries({"type": st.just("content"), "content": SHORT | TEXT_PARTS}),
    "audio": st.fixed_dictionaries(
        {"voice": SHORT, "format": st.sampled_from(["wav", "aac", "mp3", "flac", "opus", "pcm16"])}
    ),
    "web_search_options": _maybe(search_context_size=st.sampled_from(["low", "medium", "high"])),
    "prompt_cache_key": SHORT,
    "safety_identifier": SHORT,
}

# -- bad values: each is refused with a 400 naming its field ----------------------------

NOT_BOOL = st.integers() | st.text(max_size=5) | st.lists(st.booleans(), max_size=2)
NOT_STRING = (
    st.integers() | st.booleans() | st.lists(SHORT, max_size=2) | st.dictionaries(SHORT, SHORT, max_size=2)
)
NOT_INT = st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer()) | st.text(
    max_size=5
)
NOT_OBJECT = st.integers() | st.text(max_size=5) | st.lists(st.integers(), max_size=2)


def _out_of(low: float, high: float) -> st.SearchStrategy[Any]:
    # Explicit margins: hypothesis may offer -0.0 just "below" 0.0, which equals it.
    return (
        st.floats(max_value=low - 1e-6, allow_nan=False, allow_infinity=False)
        | st.floats(min_value=high + 1e-6, allow_nan=False, allow_infinity=False)
        | st.text(max_size=5)
        | st.booleans()
    )


BAD_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "model": NOT_STRING,
    "stream": NOT_BOOL,
    "stream_options": NOT_OBJECT | st.fixed_dictionaries({"include_usage": NOT_BOOL}),
    "temperature": _out_of(0, 2),
    "top_p": _out_of(0, 1),
    "presence_penalty": _out_of(-2, 2),
    "frequency_penalty": _out_of(-2, 2),
    "max_tokens": st.integers(max_value=0) | NOT_INT,
    "max_completion_tokens": st.integers(max_value=0) | NOT_INT,
    "n": st.integers(min_value=2) | st.integers(max_value=0) | NOT_INT,
    "stop": st.lists(SHORT, min_size=5, max_size=7)
    | st.integers()
    | st.lists(st.integers(), min_size=1, max_size=3),
    "response_format": NOT_OBJECT
    | st.just({})
    | st.fixed_dictionaries({"type": SHORT.filter(lambda t: t not in ("text", "json_object", "json_schema"))})
    | st.just({"type": "json_schema"})
    | st.fixed_dictionaries(
        {
            "type": st.just("json_schema"),
            "json_schema": st.fixed_dictionaries({"name": st.just("no spaces allowed")}),
        }
    ),
    "tools": NOT_OBJECT.filter(lambda v: not isinstance(v, list))
    | st.just([{"type": "function"}])
    | st.lists(
        st.fixed_dictionaries(
            {
                "type": st.just("function"),
                "function": st.fixed_dictionaries({"name": st.text(min_size=65, max_size=70, alphabet="ab")}),
            }
        ),
        min_size=1,
        max_size=2,
    ),
    "tool_choice": SHORT.filter(lambda t: t not in ("none", "auto", "required"))
    | st.integers()
    | st.just({"type": "function"}),
    "parallel_tool_calls": NOT_BOOL,
    "logit_bias": st.dictionaries(
        st.integers(0, 9).map(str),
        st.floats(min_value=100.5, allow_nan=False, allow_infinity=False),
        min_size=1,
        max_size=2,
    )
    | st.dictionaries(st.sampled_from(["a", "x1", ""]), st.integers(-5, 5), min_size=1, max_size=2)
    | st.lists(st.integers(), max_size=2),
    "logprobs": st.just(True) | NOT_BOOL,
    "top_logprobs": st.integers(0, 20) | st.integers(min_value=21) | NOT_INT,
    "seed": NOT_INT,
    "user": NOT_STRING,
    "metadata": NOT_OBJECT
    | st.dictionaries(st.text(min_size=1, max_size=8), SHORT, min_size=17, max_size=20)
    | st.dictionaries(st.text(min_size=65, max_size=70), SHORT, min_size=1, max_size=1)
    | st.dictionaries(SHORT, st.integers(), min_size=1, max_size=2),
    "store": NOT_BOOL,
    "modalities": st.lists(st.sampled_from(["video", "image"]), min_size=1, max_size=2) | st.integers(),
    "reasoning_effort": SHORT.filter(
        lambda t: t not in ("none", "minimal", "low", "medium", "high", "xhigh")
    ),
    "verbosity": st.integers() | st.just("loud"),
    "service_tier": st.just("gold") | st.integers(),
    "prediction": NOT_OBJECT | st.just({"type": "content"}),
    "audio": NOT_OBJECT | st.just({"voice": "alloy"}) | st.just({"voice": "alloy", "format": "ogg"}),
    "web_search_options": NOT_OBJECT | st.just({"search_context_size": "huge"}),
    "prompt_cache_key": NOT_STRING,
    "safety_identifier": NOT_STRING,
    "conversation_id": st.integers() | st.lists(SHORT, max_size=1),
}

BAD_MESSAGE = st.one_of(
    st.fixed_dictionaries(
        {
            "role": SHORT.filter(
                lambda r: r not in ("system", "developer", "user", "assistant", "tool", "function")
            ),
            "content": SHORT,
        }
    ),
    st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "tool"])}),
    st.fixed_dictionaries({"role": st.just("tool"), "content": SHORT}),
    st.fixed_dictionaries({"role": st.just("user"), "content": SHORT, "name": st.integers()}),
    st.fixed_dictionaries(
        {"role": st.just("user"), "content": st.integers() | st.dictionaries(SHORT, SHORT)}
    ),
    st.fixed_dictionaries(
        {
            "role": st.just("user"),
            "content": st.just([{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]),
        }
    ),
    st.fixed_dictionaries(
        {"role": st.just("system"), "content": st.just([{"type": "refusal", "refusal": "x"}])}
    ),
    st.fixed_dictionaries(
        {"role": st.just("assistant"), "tool_calls": st.just([{"id": "c", "type": "function"}])}
    ),
    NOT_OBJECT,
)


@st.composite
def valid_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A body this gateway accepts: every field drawn from its valid values."""
    names = draw(st.lists(st.sampled_from(sorted(VALID_FIELDS)), max_size=8, unique=True))
    body: dict[str, Any] = {
        "model": draw(st.sampled_from(["gpt-4", "Creative", "balanced"])),
        "messages": draw(MESSAGES),
    }
    body.update({name: draw(VALID_FIELDS[name]) for name in names})
    choice = body.get("tool_choice")
    if isinstance(choice, dict):  # a named function must be one of `tools` (the emulation calls it)
        named = {"type": "function", "function": {"name": choice["function"]["name"]}}
        body["tools"] = [*body.get("tools", []), named]
    return body


@st.composite
def bodies_with_one_bad_field(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A valid body with exactly one field (or one message) made bad, and the field's name."""
    body = draw(valid_bodies())
    bad = draw(st.sampled_from([*sorted(BAD_FIELDS), "messages"]))
    if bad == "messages":
        messages = body["messages"]
        where = draw(st.integers(0, len(messages)))
        body["messages"] = [*messages[:where], draw(BAD_MESSAGE), *messages[where:]]
    else:
        body[bad] = draw(BAD_FIELDS[bad])
    return body, bad


@st.composite
def arbitrary_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A body whose fields, messages and message fields hold any JSON at all."""
    body = draw(valid_bodies())
    for name in draw(
        st.lists(st.sampled_from([*sorted(VALID_FIELDS), "model", "messages"]), max_size=4, unique=True)
    ):
        body[name] = draw(JSON_ANY)
    if isinstance(body.get("messages"), list) and body["messages"] and draw(st.booleans()):
        message = draw(
            st.dictionaries(
                st.sampled_from(["role", "content", "name", "tool_calls", "tool_call_id", "refusal"]),
                JSON_ANY,
                max_size=4,
            )
        )
        body["messages"].insert(draw(st.integers(0, len(body["messages"]))), message)
    return body

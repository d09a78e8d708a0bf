"""The contract between the web tier and the workers: one turn's job payload.

The web tier enqueues `workers.jobs.run_turn` by dotted path with `TurnRequest.to_json()`
as its only argument, so it never imports worker code, and the worker rebuilds the
request with `TurnRequest.from_json`. Keys that both tiers touch for a running turn
(cancel flag, liveness lease) live here too.
"""

from __future__ import annotations

import dataclasses
import secrets
import string
from collections.abc import Callable
from typing import Any

from redis import Redis
from redis.client import Pipeline
from rq import Queue

from service.images import image_key
from service.runtime.settings import Settings

JOB_FUNCTION = "workers.jobs.run_turn"
_ALPHABET = string.ascii_letters + string.digits


def new_token(length: int = 24) -> str:
    """An unguessable id part: 24 base-62 characters from 143 random bits.

    One draw of random bits cut into base-62 digits: `secrets.choice` per character
    cost a noticeable share of a request's time.
    """
    number = secrets.randbits(143)
    digits = []
    for _ in range(length):
        number, digit = divmod(number, 62)
        digits.append(_ALPHABET[digit])
    return "".join(digits)


def new_completion_id() -> str:
    """A fresh OpenAI-style completion id; also the RQ job id and the relay channel."""
    return f"chatcmpl-{new_token()}"


def new_response_id() -> str:
    """A fresh Responses API id (`resp_…`); used as the completion id of its turn."""
    return f"resp_{new_token()}"


def new_message_id() -> str:
    """A fresh message id (`msg_…`): an Anthropic message, or a Responses output/input item."""
    return f"msg_{new_token()}"


def new_conversation_id() -> str:
    """A fresh conversation id, returned to clients in `X-Conversation-Id`."""
    return f"conv_{new_token()}"


# The fields of a finished job's argument RQ keeps (its failed-job registry holds it for
# REPLAY_TTL): ids to find the turn by, never the prompt, history, system text or images.
KEPT_AFTER_THE_TURN = ("completion_id", "conversation_id", "model", "created", "request_id", "kind", "group")


@dataclasses.dataclass(frozen=True)
class TurnRequest:
    """Everything a worker needs to run one turn; JSON-plain by construction.

    `prompt` is the new user message. `history` is earlier messages
    (`{"role": "user"|"assistant", "content": str}`) the upstream has not seen and
    `system` the client's system/developer text: both are injected only when a new
    upstream conversation is started. `continues` says whether `conversation_id`
    already exists in the store. `owner` is the hashed API key that owns it.
    `lock_token` holds the conversation's lock (`service.state.locks`) when continuing.
    `store` False (a Responses `store: false`) keeps nothing once the turn is over.
    `options` is `service.tools.options.TurnOptions.to_json()`: tools, structured output
    and the cuts the worker applies to the answer (empty: the answer passes untouched).
    """

    completion_id: str
    conversation_id: str
    owner: str
    model: str
    prompt: str
    history: list[dict[str, str]] = dataclasses.field(default_factory=list)
    system: str = ""
    continues: bool = False
    created: int = 0
    lock_token: str = ""
    # The web request's x-request-id, so the worker's log lines carry it too ("" = none).
    request_id: str = ""
    store: bool = True
    # The new message's images as `service.images.ImageRef` JSON: parked bytes or a URL to fetch.
    images: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    # "chat", or "image": an image generation (`/v1/images/generations`) that must end in an image.
    kind: str = "chat"
    # For kind "image": "url", or "b64_json" (the worker adds the fetched bytes to the image event).
    image_format: str = "url"
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    # A continued turn's own system prompt, when it carries one (workers.instructions sends a change).
    instructions: str | None = None
    # `service.state.ephemeral.Carried` JSON: the unstored upstream conversation a `store: false` history
    # left off in, continued with only the new input ({} = none).
    carried: dict[str, Any] = dataclasses.field(default_factory=dict)
    # The caller's account group: the turn runs only on its accounts (service.accounts.groups).
    group: str = "default"
    # The web request asked for a per-phase trace (service.runtime.trace): the worker keeps its side.
    trace: bool = False

    def to_json(self) -> dict[str, Any]:
        """The job argument (`trace` only when set: an untraced turn's job is as it always was).

        Shallow, not `dataclasses.asdict` (a recursive deep copy, a fifth of the enqueue's CPU):
        the fields are JSON-plain and RQ serialises the argument as the job is enqueued."""
        data = {name: getattr(self, name) for name in _FIELD_NAMES}
        if not self.trace:
            del data["trace"]
        return data

    def redacted(self) -> dict[str, Any]:
        """The job argument without anything the user wrote: what RQ may keep of a finished job."""
        return {field: getattr(self, field) for field in KEPT_AFTER_THE_TURN}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TurnRequest:
        """Rebuild from a job argument, ignoring keys a newer web tier may add."""
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


_FIELD_NAMES = tuple(field.name for field in dataclasses.fields(TurnRequest))


def enqueue_turn(
    queue: Queue,
    request: TurnRequest,
    settings: Settings,
    *,
    also: Callable[[Pipeline], object] | None = None,
) -> None:
    """Put the turn on the queue with explicit timeouts and short-lived results.

    Through one pipeline, so enqueueing is a single Redis round trip (RQ alone takes two);
    `also` adds the caller's own commands to it (e.g. a resumable stream's record).
    A failed job is kept as long as the turn's replay (REPLAY_TTL), and the worker
    replaces its argument by `TurnRequest.redacted()` when the turn ends, so what RQ
    keeps names the turn but holds none of the user's text.
    """
    with queue.connection.pipeline() as pipe:
        enqueue_turn_in(pipe, queue, request, settings, also=also)
        pipe.execute()


def enqueue_turn_in(
    pipe: Pipeline,
    queue: Queue,
    request: TurnRequest,
    settings: Settings,
    *,
    also: Callable[[Pipeline], object] | None = None,
) -> None:
    """`enqueue_turn`'s commands queued on `pipe`, not sent (the web tier's gated enqueue
    sends them inside its admission script: `service.state.gated`)."""
    queue.enqueue(
        JOB_FUNCTION,
        request.to_json(),
        job_id=request.completion_id,
        job_timeout=settings.job_timeout,
        result_ttl=60,
        failure_ttl=settings.replay_ttl,
        ttl=int(settings.queue_wait_timeout) + 5,
        description=f"turn {request.completion_id} of {request.conversation_id}",
        pipeline=pipe,
    )
    if not request.carried:
        # The worker's dequeue grants the turn's account in the same round trip (`workers.dequeue`),
        # for which it needs the owner and group now; a continued turn's conversation is read
        # there too, and its upstream handle's account asked for (unless `store: false`).
        hint = grant_hint_key(request.completion_id)
        pipe.hset(hint, mapping={"owner": request.owner, "group": request.group})
        if request.continues:
            pipe.hset(hint, mapping={"conv": request.conversation_id, "pref": "1" if request.store else ""})
        parked = [image_key(str(ref["digest"])) for ref in request.images if ref.get("digest")]
        if parked:  # the dequeue reads the parked image bytes too
            pipe.hset(hint, "imgs", ",".join(parked))
        pipe.expire(hint, int(settings.queue_wait_timeout) + 65)
    if also is not None:  # after RQ's own commands
        also(pipe)


GRANT_HINT_PREFIX = "turn:grant:"


def grant_hint_key(completion_id: str) -> str:
    """Who a queued turn runs for (owner, group; a continued one's conversation): `workers.dequeue`."""
    return f"{GRANT_HINT_PREFIX}{completion_id}"


def cancel_key(completion_id: str) -> str:
    """Set by the web tier when the client went away; the job polls it."""
    return f"turn:{completion_id}:cancel"


def lease_key(completion_id: str) -> str:
    """Kept alive by the worker while the turn runs; its expiry means the worker died."""
    return f"turn:{completion_id}:lease"


def request_cancel(redis: Redis, completion_id: str, ttl: int = 600) -> None:
    """Ask the worker running this turn to stop (idempotent)."""
    redis.set(cancel_key(completion_id), b"1", ex=ttl)

"""Which conversation a request continues, and how, so context carries for every client.

Three ways, in order:

1. **Explicit id** — body `conversation_id` or `id`, or the `X-Conversation-Id` header
   (a conversation id or the id of any earlier completion). Unknown, or another key's,
   is a 404.
2. **History matching** — stateless clients (LobeChat, Open WebUI, NextChat, LangChain)
   re-send the whole history each turn; when its messages equal a stored transcript of
   the same key (`ConversationStore.match`; a changed system prompt does not prevent it,
   the worker sends the change upstream), the turn continues that conversation and only
   the new user message goes upstream.
3. **By digest** — the history a `store: false` turn left behind (`service.state.ephemeral`):
   a new, unstored conversation that continues that upstream conversation with only
   the new input.
4. **Injection** — anything else starts a new conversation; its history and system
   prompt are injected into the new upstream conversation by the dialect.

Continuing takes the conversation's lock first (`service.state.locks`), then re-reads the
conversation: a request that waited behind another turn decides on the latest
transcript. If the client's history is not the whole transcript (a regenerated
answer, an edit), continuing would send a turn into an upstream conversation whose
history differs from what the client sees, so the turn *branches*: a new conversation
seeded with the client's history; the original stays usable.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets

from service.errors import RateLimited
from service.state import ephemeral, locks, streams
from service.state.conversations import Conversation, fingerprint
from service.turns import new_conversation_id
from service.web.http.extension import Gateway
from service.web.http.meta import conversation_not_found
from service.web.pipeline.request import ChatRequest

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Resolution:
    """How this request's turn relates to stored conversations."""

    conversation_id: str
    continues: bool
    history: list[dict[str, str]]
    system: str
    lock_token: str = ""
    how: str = "new"  # new | id | matched | branched | digest
    turns_remaining: int | None = None
    # A continued turn's own system prompt (None: it keeps the conversation's); see workers.instructions.
    instructions: str | None = None
    # The unstored upstream conversation a `store: false` history left off in (`service.state.ephemeral`).
    carried: ephemeral.Carried | None = None


def resolve(gw: Gateway, chat: ChatRequest, owner: str) -> Resolution:
    """Decide new / continue / branch for this request; holds the lock when continuing."""
    history = [dict(m) for m in chat.history]
    if chat.conversation_id is not None:
        conversation = gw.store.get_owned(chat.conversation_id, owner)
        if conversation is None:
            raise conversation_not_found(chat.conversation_id, chat.conversation_param)
        if not history:
            # The client keeps no history (0.28 style): continue whatever the latest state is.
            return _continue(gw, conversation.id, owner, chat, how="id", expected=None)
        return _continue(gw, conversation.id, owner, chat, how="id", expected=history)
    match = gw.store.match(owner, history)
    if match is not None:
        return _continue(gw, match.conversation_id, owner, chat, how="matched", expected=history)
    carried = ephemeral.take(gw.redis, owner, gw.settings.secret_key, history)
    return Resolution(
        new_conversation_id(),
        continues=False,
        history=history,
        system=chat.system,
        how="new" if carried is None else "digest",
        carried=carried,
    )


def aimed(chat: ChatRequest, conversation_id: str, how: str) -> Resolution:
    """Continuing `conversation_id` as `pipeline.gate_continue` will check it and take its lock, in the
    enqueue's own script (its lock token chosen here); the same as `_continue` decides when it can."""
    return Resolution(
        conversation_id,
        continues=True,
        history=[],
        system="",
        lock_token=secrets.token_hex(16),
        how=how,
        instructions=chat.system if chat.system.strip() else None,
    )


def _continue(
    gw: Gateway,
    conversation_id: str,
    owner: str,
    chat: ChatRequest,
    *,
    how: str,
    expected: list[dict[str, str]] | None,
) -> Resolution:
    settings = gw.settings
    ttl = settings.queue_wait_timeout + 10
    token = locks.acquire(gw.redis, conversation_id, ttl=ttl, wait=0)
    if token is None:  # busy: a turn whose client left (in its resume grace) gives way at once
        wait = settings.job_timeout + settings.queue_wait_timeout
        streams.preempt(gw.redis, conversation_id, ttl=wait)
        token = locks.acquire(
            gw.redis,
            conversation_id,
            ttl=ttl,
            wait=wait,
            waker=gw.hub.notifications,  # woken by the release, not polling Redis every few ms
        )
        streams.waited(gw.redis, conversation_id)
    if token is None:
        raise RateLimited(
            "Another request on this conversation is still running; retry shortly.",
            code="conversation_busy",
            retry_after=5,
        )
    conversation = gw.store.get(conversation_id)
    if conversation is None or conversation.owner != owner:  # deleted meanwhile (or a stale index entry)
        locks.release(gw.redis, conversation_id, token)
        if how == "matched":
            return Resolution(
                new_conversation_id(), continues=False, history=expected or [], system=chat.system
            )
        raise conversation_not_found(chat.conversation_id or conversation_id, chat.conversation_param)
    if expected is not None and not _sees_whole_transcript(conversation, expected):
        locks.release(gw.redis, conversation_id, token)
        log.info("event=conversation_branched from=%s turns=%d", conversation.id, conversation.turns)
        return Resolution(
            new_conversation_id(), continues=False, history=expected, system=chat.system, how="branched"
        )
    return Resolution(
        conversation.id,
        continues=True,
        history=[],
        system="",
        lock_token=token,
        how=how,
        turns_remaining=_turns_remaining(conversation),
        instructions=chat.system if chat.system.strip() else None,
    )


def _sees_whole_transcript(conversation: Conversation, history: list[dict[str, str]]) -> bool:
    """The client's history is exactly the stored transcript's messages.

    The system prompt is not compared: a changed one goes upstream as an update
    (`workers.instructions`), and a client that continues by id may leave it out.
    """
    return fingerprint("", history) == fingerprint("", conversation.messages)


def _turns_remaining(conversation: Conversation) -> int | None:
    """Turns left in the upstream conversation after this one (before a silent roll-over)."""
    return _left(conversation.handle or {})


def turns_left(raw_handle: bytes | str) -> int | None:
    """`_turns_remaining` from the stored handle's JSON ("" or unreadable: not known)."""
    try:
        handle = json.loads(raw_handle) if raw_handle else {}
    except ValueError:
        return None
    return _left(handle) if isinstance(handle, dict) else None


def _left(handle: dict[str, object]) -> int | None:
    used, limit = handle.get("turns_used"), handle.get("turns_max")
    if not isinstance(used, int) or not isinstance(limit, int) or limit <= 0:
        return None
    return max(0, limit - used - 1)

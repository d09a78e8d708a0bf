"""Which upstream conversation a turn starts on, and what it must be told first.

Three cases, decided once at the start of a turn (`begin`):

- a stored conversation (`store: true`): its stored handle, if still alive. When the
  request carries a system prompt that differs from the one the conversation was given,
  the conversation takes the new one and a continued upstream conversation is sent the
  change first (`workers.instructions`, the changed lines);
- a `store: false` history the gateway recognised by digest (`service.state.ephemeral`): the
  handle it left, and the whole new system prompt if its digest differs (the old text
  was never kept);
- anything else: no handle (a new upstream conversation, seeded with the transcript).
  A `store: false` turn on a stored conversation never advances the stored upstream
  conversation, so its transcript and handle stay as they were.

`remember` is the other end: a completed `store: false` turn leaves only the digest entry
for its history, queued on the turn's fenced save.
"""

from __future__ import annotations

import dataclasses

from redis.client import Pipeline

from service.runtime.settings import Settings
from service.state import ephemeral
from service.state.conversations import Conversation
from service.turns import TurnRequest
from workers.instructions import update_block
from workers.upstream import Handle, load_handle


@dataclasses.dataclass(frozen=True)
class Start:
    """The handle to continue (None: start a new upstream conversation) and the update to send first."""

    handle: Handle | None
    update: str = ""


def begin(settings: Settings, request: TurnRequest, conversation: Conversation) -> Start:
    """Pick the upstream conversation; sets `conversation.handle`/`.system` to what this turn uses."""
    carried = ephemeral.Carried.from_json(request.carried)
    if carried is not None:
        conversation.handle = carried.handle  # the tool shaping reads what the upstream has seen
        known = ephemeral.instructions_digest(settings.secret_key, conversation.system)
        update = update_block(None, conversation.system) if known != carried.instructions else ""
        return Start(load_handle(settings, carried.handle), update)
    handle = load_handle(settings, conversation.handle) if request.store else None
    update = ""
    if request.instructions is not None:
        update = update_block(conversation.system, request.instructions)
        conversation.system = request.instructions
    return Start(handle, update)


def preloaded(
    request: TurnRequest, stored: tuple[bytes | None, bytes | None, bytes | None] | None
) -> Conversation | None:
    """The continued conversation as the job's dequeue read it (`workers.dequeue`): document, handle
    and metadata, as `ConversationStore.get` reads them; None when it was not read or is not the
    owner's (the turn then reads it itself, and says why it cannot continue)."""
    if not request.continues or stored is None or not stored[0]:
        return None
    conversation = Conversation.from_json(stored[0], stored[1], stored[2])
    return conversation if conversation.owner == request.owner else None


def remember(pipe: Pipeline, settings: Settings, request: TurnRequest, conversation: Conversation) -> None:
    """Queue the digest entry a completed `store: false` turn leaves (no transcript, no text)."""
    if conversation.handle is None:
        return
    carried = ephemeral.Carried(
        conversation.handle, ephemeral.instructions_digest(settings.secret_key, conversation.system)
    )
    ephemeral.remember(
        pipe,
        request.owner,
        settings.secret_key,
        conversation.messages,
        carried,
        ttl=settings.upstream_handle_ttl,
    )

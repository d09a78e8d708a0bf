"""The gate's reach into the conversation a request continues, and its Idempotency-Key claim.

`pipeline.gate` checks a new conversation's door, quota and room in the enqueue's own
script. A continued conversation and a claimed key used to be read and written first,
each in a round trip of its own (the conversation, its lock, the conversation again under
the lock; the claim, then its record), because each may stop the turn. Here they are two
more checks of the same script, after the door and the quota (so a failed lookup still
counts against the key, as it always did):

- `CLAIM` stops the turn when the key is already claimed (the retry attaches to that run,
  `pipeline.attach`); otherwise the claim is written with the enqueue, conversation known.
- `CONTINUE` reads the conversation, checks it is the caller's and, when the client sent
  its history, that it is the whole transcript (the fingerprint index says so: it points
  at this conversation at its current turn), then takes its lock. Anything else (gone,
  another transcript, the lock busy) stops the turn *unresolved*: the request then
  resolves it the old way (`pipeline.resolve`: 404, branch, wait for the lock), with the
  door and quota already passed.

`aim` finds which conversation to reach: a conversation id is used as it is; a completion
id or a history costs one read first (its pointer), which the script does not trust: the
lock is taken only if the conversation is still as expected.
"""

from __future__ import annotations

import dataclasses

from service.state.conversations import (
    COMPLETION_PREFIXES,
    conversation_key,
    fingerprint,
    handle_key,
    history_key,
)
from service.state.locks import lock_key
from service.web.http.extension import Gateway
from service.web.pipeline.request import ChatRequest

CLAIM = """
local raw = redis.call('GET', KEYS[1])
if raw then return {0, raw} end
return {1}
"""

CONTINUE = """
local doc = redis.call('GET', KEYS[1])
if not doc then return {0, 'missing'} end
local ok, data = pcall(cjson.decode, doc)
if not ok or type(data) ~= 'table' or data['owner'] ~= ARGV[1] then return {0, 'missing'} end
if KEYS[4] ~= '' then
  local entry = redis.call('GET', KEYS[4])
  if not entry then return {0, 'differs'} end
  local turns = 0
  for _, m in ipairs(data['messages'] or {}) do
    if type(m) == 'table' and m['role'] == 'user' then turns = turns + 1 end
  end
  local fine, at = pcall(cjson.decode, entry)
  if not fine or type(at) ~= 'table' or at['conversation_id'] ~= data['id']
    or tonumber(at['turns']) ~= turns then return {0, 'differs'} end
end
if not redis.call('SET', KEYS[3], ARGV[2], 'NX', 'PX', ARGV[3]) then return {0, 'busy'} end
return {1, redis.call('GET', KEYS[2]) or ''}
"""


class Unresolved(Exception):
    """The script could not continue the conversation as aimed (gone, another transcript, busy)."""


@dataclasses.dataclass(frozen=True)
class Target:
    """The conversation a request continues, as far as one read (or none) can tell."""

    conversation_id: str
    how: str  # id | matched
    expected: list[dict[str, str]] | None  # the client's history: must be the whole transcript

    def keys(self, owner: str) -> list[str]:
        """`CONTINUE`'s keys: document, handle, lock, and the history's fingerprint entry (or "")."""
        cid = self.conversation_id
        index = history_key(owner, fingerprint("", self.expected)) if self.expected else ""
        return [conversation_key(cid), handle_key(cid), lock_key(cid), index]


NEW = Target("", "new", None)
"""A new conversation with no history: nothing to reach."""


def aim(gw: Gateway, chat: ChatRequest, owner: str) -> Target | None:
    """The conversation to continue (NEW for none); None when the old order must decide (a
    pointer that leads nowhere: its 404 or its new conversation come after the checks)."""
    history = [dict(m) for m in chat.history]
    if chat.conversation_id is not None:
        cid: str | None = chat.conversation_id
        if chat.conversation_id.startswith(COMPLETION_PREFIXES):
            cid = gw.store.resolve(chat.conversation_id)
        return Target(cid, "id", history or None) if cid else None
    if not history:
        return NEW
    match = gw.store.match(owner, history)
    return Target(match.conversation_id, "matched", history) if match is not None else None

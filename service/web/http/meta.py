"""Everything but completions and health: the model list and stored conversations.

`/v1/models` lets SDKs and front-ends discover the tone-named models; both the `/v1`
and bare forms are served because clients differ in how they join the base URL.
Conversations are deletable only with the key that created them; another key's
conversation is reported as missing, so ids cannot be probed. The rest of the
Conversations API (create, read, metadata, items) is `service.web.conversations.routes`.
"""

from __future__ import annotations

from flask import Blueprint, Response, g, jsonify, request

from service.errors import NotFound
from service.models import catalog, find_model, unknown_model_message
from service.web.http import model_list
from service.web.http.extension import gateway

blueprint = Blueprint("meta", __name__)


def conversation_not_found(conversation_id: str, param: str | None) -> NotFound:
    """The 404 for a conversation that does not exist or belongs to another key."""
    return NotFound(
        f"No conversation found with id '{conversation_id}'.", param=param, code="conversation_not_found"
    )


@blueprint.get("/v1/models")
@blueprint.get("/models")
def list_models() -> Response:
    """Every catalog entry the caller's key may use and its Claude Code picker ids (`model_list`):
    Anthropic's list shape when the request carries `anthropic-version`, else OpenAI's."""
    upstream = gateway().settings.upstream
    specs = [spec for spec in catalog(upstream) if _allowed(spec.id)]
    anthropic = bool(request.headers.get("anthropic-version"))
    # A picker id is a name of its own: listed only when the key may ask for it by that name.
    listed = [e for e in model_list.entries(specs, upstream, picker_first=anthropic) if _allowed(e[0])]
    if anthropic:
        return jsonify(model_list.anthropic_list(listed, request.args))
    return jsonify(model_list.openai_list(listed))


def _allowed(model: str) -> bool:
    caller = g.get("caller")
    return caller is None or caller.limits.allows(model)


@blueprint.get("/v1/models/<path:model_id>")
@blueprint.get("/models/<path:model_id>")
def get_model(model_id: str) -> Response:
    """One model card, or 404 `model_not_found`."""
    settings = gateway().settings
    spec = find_model(model_id, settings.upstream, settings.model_aliases)
    if spec is None or not _allowed(spec.id):
        raise NotFound(
            unknown_model_message(model_id),
            param="model",
            code="model_not_found",
        )
    card = spec.card()
    if spec.id.lower() != model_id.strip().lower():
        card["id"] = model_id  # an alias answers under the name asked for
    return jsonify(card)


@blueprint.delete("/v1/conversations/<conversation_id>")
def delete_conversation(conversation_id: str) -> Response:
    """Forget the caller's conversation; the next turn with its id is a 404."""
    store = gateway().store
    conversation = store.get_owned(conversation_id, g.owner)
    if conversation is None:
        raise conversation_not_found(conversation_id, None)
    store.delete(conversation.id)
    return jsonify({"id": conversation.id, "object": "conversation.deleted", "deleted": True})

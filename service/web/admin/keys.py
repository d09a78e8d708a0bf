"""The admin API for managed keys, under /admin/keys (Bearer ADMIN_KEY).

    POST   /admin/keys                  create: {"label", "rpm", "max_concurrent",
                                        "tokens_per_day", "models"}; the answer holds the
                                        secret (`key`), the only time it is ever shown
    GET    /admin/keys                  every key: prefix, label, limits, created, last used
                                        (static API_KEYS too, `"managed": false`, for their ids)
    GET    /admin/keys/<id>             one key
    PATCH  /admin/keys/<id>             change label and/or limits (null = the default)
    DELETE /admin/keys/<id>             revoke: the key's next request is a 401 everywhere
    GET    /admin/keys/<id>/usage?days=7  requests, tokens, errors per UTC day, today first

Without ADMIN_KEY the blueprint is not registered, so /admin/keys is a plain 404. The
middleware lets /admin/ through unauthenticated; `_require_admin_key` guards it here.
"""

from __future__ import annotations

import hmac
from typing import Any

from flask import Blueprint, Flask, Response, g, jsonify, request

from service.access.key_limits import parse_limits
from service.access.key_usage import usage as usage_days
from service.access.keys import KeyNotFound, KeyStore, ManagedKey, static_key_id
from service.accounts import groups
from service.errors import AuthenticationFailed, InvalidRequest, NotFound
from service.runtime.settings import Settings
from service.state.conversations import owner_of
from service.web.admin.body import admin_json
from service.web.http.auth import mask_key
from service.web.http.extension import gateway
from service.web.pipeline import quota

blueprint = Blueprint("admin_keys", __name__, url_prefix="/admin/keys")

MAX_USAGE_DAYS = 35  # as long as usage is kept (service.access.key_usage.USAGE_TTL)
LIMIT_FIELDS = ("rpm", "max_concurrent", "tokens_per_day", "models")


def init_app(app: Flask, settings: Settings) -> None:
    """Register the keys API only when ADMIN_KEY is set."""
    if settings.admin_key:
        app.register_blueprint(blueprint)


def require_admin_key() -> None:
    """401 unless the request carries `Authorization: Bearer <ADMIN_KEY>` (constant-time compare)."""
    g.surface = "admin"  # the request counter's label (service.web.http.telemetry)
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        key.strip().encode(), gateway().settings.admin_key.encode()
    ):
        raise AuthenticationFailed("The admin API needs `Authorization: Bearer <ADMIN_KEY>`.")


blueprint.before_request(require_admin_key)


def _store() -> KeyStore:
    return KeyStore(gateway().redis)


def _body() -> dict[str, Any]:
    body = admin_json()
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", param=None)
    unknown = sorted(set(body) - {"label", "group", *LIMIT_FIELDS})
    if unknown:
        raise InvalidRequest(f"Unknown field '{unknown[0]}'.", param=unknown[0])
    label = body.get("label")
    if label is not None and (not isinstance(label, str) or len(label) > 200):
        raise InvalidRequest("'label' must be a string of at most 200 characters.", param="label")
    return body


def _get(store: KeyStore, key_id: str) -> ManagedKey:
    try:
        return store.get(key_id)
    except KeyNotFound:
        raise NotFound(f"No API key with id '{key_id}'.", code="key_not_found", param="id") from None


@blueprint.post("")
def create_key() -> tuple[Response, int]:
    """Create a key; the response is the only place its secret ever appears."""
    body = _body()
    store = _store()
    key, secret = store.create(
        label=body.get("label") or "", limits=parse_limits(body), group=groups.parse(body.get("group"))
    )
    return jsonify({**store.views([key])[0], "key": secret}), 201


@blueprint.get("")
def list_keys() -> Response:
    """Every managed key, then every static key (read-only here), without secrets."""
    store = _store()
    return jsonify({"object": "list", "data": store.views(store.all()) + _static_views(store)})


def _static_views(store: KeyStore) -> list[dict[str, Any]]:
    settings = gateway().settings
    ids = [static_key_id(owner_of(key, secret=settings.secret_key)) for key in settings.api_keys]
    key_groups = dict(settings.api_key_groups)
    used = store.last_used(ids)
    limits = quota.defaults(settings).to_json()
    return [
        {
            "id": key_id,
            "object": "api_key",
            "managed": False,
            "prefix": mask_key(key)[:5],
            "label": "API_KEYS",
            "created": None,
            "last_used": used.get(key_id),
            "limits": limits,
            "group": key_groups.get(key, groups.DEFAULT_GROUP),
        }
        for key_id, key in zip(ids, settings.api_keys, strict=True)
    ]


@blueprint.get("/<key_id>")
def get_key(key_id: str) -> Response:
    """One managed key."""
    store = _store()
    return jsonify(store.views([_get(store, key_id)])[0])


@blueprint.patch("/<key_id>")
def update_key(key_id: str) -> Response:
    """Change a key's label or limits; fields left out stay as they are."""
    body = _body()
    store = _store()
    current = _get(store, key_id)
    try:
        key = store.update(
            key_id,
            label=body.get("label"),
            limits=parse_limits(body, current.limits),
            group=groups.parse(body["group"]) if "group" in body else None,
        )
    except KeyNotFound:
        raise NotFound(f"No API key with id '{key_id}'.", code="key_not_found", param="id") from None
    return jsonify(store.views([key])[0])


@blueprint.delete("/<key_id>")
def revoke_key(key_id: str) -> Response:
    """Revoke a key at once, on every web process."""
    try:
        _store().revoke(key_id)
    except KeyNotFound:
        raise NotFound(f"No API key with id '{key_id}'.", code="key_not_found", param="id") from None
    return jsonify({"id": key_id, "object": "api_key", "deleted": True})


@blueprint.get("/<key_id>/usage")
def key_usage(key_id: str) -> Response:
    """The key's usage per UTC day (a revoked key's history stays readable until it expires)."""
    raw = request.args.get("days", "7")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_USAGE_DAYS:
        raise InvalidRequest(f"'days' must be a whole number from 1 to {MAX_USAGE_DAYS}.", param="days")
    days = usage_days(gateway().redis, key_id, days=int(raw))
    return jsonify({"object": "list", "key_id": key_id, "data": days})

"""The admin API under /admin/: the account pool, for operators (Bearer ADMIN_KEY).

    GET    /admin/accounts          every account: state, in flight, turns in the last
                                    minute, next available time, last error (no secrets)
    POST   /admin/accounts          add: cookies and/or access_token, label, limits
    PATCH  /admin/accounts/<id>     refresh cookies/token (ends needs_attention), enable or
                                    disable, change limits (null = the default)
    DELETE /admin/accounts/<id>     remove; its conversations move on their next turn
    POST   /admin/accounts/<id>/check  a worker bootstraps the account and runs one short
                                    turn; each step's status and Cloudflare verdict

Without ADMIN_KEY the blueprint is not registered at all, so /admin/… is a plain 404.
The registry it edits is the one `pipeline.admission` keeps for every surface's admission check.
"""

from __future__ import annotations

import hmac

from flask import Blueprint, Flask, Response, g, jsonify, request

from service.accounts import checks, manage
from service.accounts.account import AccountNotFound
from service.errors import AuthenticationFailed, NotFound
from service.runtime.settings import Settings
from service.web.admin.body import admin_json
from service.web.http.extension import gateway
from service.web.pipeline.admission import registry

blueprint = Blueprint("admin", __name__, url_prefix="/admin")


def init_app(app: Flask, settings: Settings) -> None:
    """Register the admin API only when ADMIN_KEY is set (the registry is `admission`'s)."""
    if settings.admin_key:
        app.register_blueprint(blueprint)


@blueprint.before_request
def _require_admin_key() -> None:
    g.surface = "admin"  # the request counter's label (service.web.telemetry)
    settings = gateway().settings
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        key.strip().encode(), settings.admin_key.encode()
    ):
        raise AuthenticationFailed("The admin API needs `Authorization: Bearer <ADMIN_KEY>`.")
    reg = registry()
    if not reg.redis.exists(f"{reg.prefix}:seq"):  # no worker has seeded the pool yet
        reg.seed(settings.upstream_cookies, access_token=settings.copilot_access_token)


@blueprint.get("/accounts")
def list_accounts() -> Response:
    """Every account, no secrets."""
    reg = registry()
    return jsonify({"object": "list", "data": manage.views(reg, reg.all(fresh=True))})


@blueprint.post("/accounts")
def add_account() -> tuple[Response, int]:
    """Add an account (cookies and identity from `curl` / `har`, or given field by field)."""
    reg = registry()
    changes, warnings = manage.parse_request(admin_json(), creating=True, host=_host())
    account = manage.add(reg, changes)
    return jsonify({**manage.views(reg, [account])[0], "warnings": warnings}), 201


@blueprint.patch("/accounts/<account_id>")
def update_account(account_id: str) -> Response:
    """Refresh, enable/disable, or change the limits of an account."""
    reg = registry()
    changes, warnings = manage.parse_request(admin_json(), creating=False, host=_host())
    try:
        account = manage.update(reg, account_id, changes)
    except AccountNotFound:
        raise _not_found(account_id) from None
    return jsonify({**manage.views(reg, [account])[0], "warnings": warnings})


def _host() -> str:
    return manage.upstream_host(gateway().settings)


@blueprint.post("/accounts/<account_id>/check")
def check_account(account_id: str) -> Response:
    """Bootstrap the account and run one short turn in a worker; every step's outcome (no secrets)."""
    try:
        registry().get(account_id)
    except AccountNotFound:
        raise _not_found(account_id) from None
    gw = gateway()
    return jsonify(checks.run(gw.queue, gw.settings, account_id))


@blueprint.delete("/accounts/<account_id>")
def delete_account(account_id: str) -> Response:
    """Remove an account."""
    try:
        registry().delete(account_id)
    except AccountNotFound:
        raise _not_found(account_id) from None
    return jsonify({"id": account_id, "object": "account", "deleted": True})


def _not_found(account_id: str) -> NotFound:
    return NotFound(f"No account with id '{account_id}'.", code="account_not_found", param="id")

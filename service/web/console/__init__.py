"""The gateway's face: the chat playground at `/` and the operator console at `/console`.

Both are static pages (HTML, ES modules, CSS from this package; no build step, nothing
from the internet) that talk to the gateway like any other client: the playground uses
only the public API with the key the user types in (kept in the browser's
localStorage), the console only the admin API with ADMIN_KEY (kept in sessionStorage).
The pages themselves carry no secret and need no key, so the auth middleware lets this
blueprint through (`middleware.PAGES_BLUEPRINT` names it).

    /           the playground (404 with PLAYGROUND=off)
    /console    the operator console (404 without ADMIN_KEY)
    /_ui/…      their scripts and styles
    /admin/stats  the Live page's numbers (`stats`; only with ADMIN_KEY)

Every response of the blueprint carries a strict Content-Security-Policy (scripts and
styles from this origin only, no inline code, `connect-src 'self'`) and refuses framing.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from flask import Blueprint, Flask, Response, render_template, request
from werkzeug import exceptions as http

from service.runtime.settings import Settings
from service.web.console import stats
from service.web.http.extension import gateway
from service.web.http.middleware import PAGES_BLUEPRINT

HERE = Path(__file__).resolve().parent

# Generated images come from the upstream's own host, so img-src allows any http(s) origin;
# everything else is this origin only.
CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob: https: http:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}

blueprint = Blueprint(
    PAGES_BLUEPRINT,
    __name__,
    static_folder="static",
    static_url_path="/_ui",
    template_folder="templates",
)


def init_app(app: Flask, settings: Settings) -> None:
    """Register the pages (each view answers 404 when it is off) and, with ADMIN_KEY, /admin/stats."""
    app.register_blueprint(blueprint)
    if settings.admin_key:
        app.register_blueprint(stats.blueprint)


@functools.cache
def _version(filename: str) -> str:
    """A short digest of a static file, so a changed asset is never served from a stale cache."""
    return hashlib.sha256((HERE / "static" / filename).read_bytes()).hexdigest()[:12]


@blueprint.app_template_global()
def asset(filename: str) -> str:
    """The URL of a static file of this package, with its content version."""
    return f"/_ui/{filename}?v={_version(filename)}"


def _settings() -> Settings:
    return gateway().settings


# Other methods are the API's 404 ("Invalid URL (POST /)"), as before the pages existed: a client
# whose base URL lost its path is told so, not sent a 405 about a web page.
ANY_METHOD = ["GET", "POST", "PUT", "PATCH", "DELETE"]


@blueprint.route("/", methods=ANY_METHOD)
def playground() -> str:
    """The chat playground."""
    if request.method != "GET" or not _settings().playground:
        raise http.NotFound()
    return render_template("playground.html")


@blueprint.route("/console", methods=ANY_METHOD)
def console() -> str:
    """The operator console (absent without ADMIN_KEY)."""
    if request.method != "GET" or not _settings().admin_key:
        raise http.NotFound()
    return render_template("console.html")


@blueprint.after_request
def _secure(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    # Pages are never stored; scripts and styles are revalidated (ETag → 304) on every load, since
    # the modules a page imports carry no version in their URL and must never outlive an upgrade.
    response.headers["Cache-Control"] = "no-store" if response.mimetype == "text/html" else "no-cache"
    return response

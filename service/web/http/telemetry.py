"""Request metrics of the web tier, recorded in one `after_request` hook (and log ids reset).

Views do not call metrics: they leave what they know on `g` (`g.model` once the
request is validated; `g.surface` if the path alone does not say which API it is)
and this hook labels the request counter with it. Label values are bounded: the
surface comes from a fixed list, never the raw path, and the model only once the
view accepted it, so a client cannot blow up the number of series.
"""

from __future__ import annotations

from flask import Flask, Response, g, request

from service.runtime import livestats, metrics
from service.runtime.logs import conversation_id_var, job_id_var
from service.web.http.extension import gateway
from service.web.http.middleware import OPEN_PATHS, PAGES_BLUEPRINT

# The last path segment names the API surface whatever the prefix (/v1, /openai, …).
SURFACES = {
    "completions": "chat.completions",
    "responses": "responses",
    "messages": "messages",
    "models": "models",
}


def surface_of(path: str) -> str:
    """The API surface a path belongs to (`chat.completions`, `responses`, …, or `other`)."""
    segments = [segment for segment in path.split("/") if segment]
    if segments[:1] == ["admin"]:
        return "admin"
    for index in range(len(segments) - 1, max(len(segments) - 4, -1), -1):
        segment = segments[index]
        if segment == "completions" and (index == 0 or segments[index - 1] != "chat"):
            return "completions"  # the legacy Completions API (service.web.legacy_completions)
        if segment in SURFACES:
            return SURFACES[segment]
        if segment == "conversations":
            return "conversations"
    return "other"


def _unbind() -> None:
    # A keep-alive connection serves many requests in one greenlet: start each clean.
    job_id_var.set("-")
    conversation_id_var.set("-")


def _record(response: Response) -> Response:
    page = request.blueprint == PAGES_BLUEPRINT and request.method == "GET"  # the playground's own files
    if request.path not in OPEN_PATHS and request.method != "OPTIONS" and not page:
        metrics.REQUESTS.labels(
            surface=g.get("surface") or surface_of(request.path),
            model=g.get("model") or "-",
            status=str(response.status_code),
        ).inc()
        if response.status_code >= 400 and g.get("model"):  # a refused or failed turn, for /admin/stats
            gw = gateway()
            livestats.record(gw.redis, gw.settings.queue_name, counts={f"http:{response.status_code}": 1})
    return response


def init_app(app: Flask) -> None:
    """Register the hooks."""
    app.before_request(_unbind)
    app.after_request(_record)

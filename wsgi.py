"""WSGI entry point: `gunicorn -c deploy/gunicorn.conf.py wsgi:app`."""

from __future__ import annotations

from service.web import create_app

app = create_app()

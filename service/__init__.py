"""The gateway's shared core: settings, errors, Redis, relay, conversations, job contract.

Nothing in this package (outside `service.web`) imports Flask or websocket code, so
both the web tier and the workers can use it.
"""

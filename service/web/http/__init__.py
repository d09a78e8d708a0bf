"""The HTTP edge of the web tier: app resources, middleware, authentication, body reading,
error rendering, health, paging and the model/conversation metadata routes.

Nothing here knows a wire format; surfaces and the pipeline import it, never the reverse.
"""

"""OpenAI Responses: routes, request parsing, response and stream-event rendering.
"""

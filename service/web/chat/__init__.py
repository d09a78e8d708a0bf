"""OpenAI Chat Completions: routes, request parsing (and its JSON Schema), response rendering.
"""

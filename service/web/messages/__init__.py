"""Anthropic Messages: routes, request parsing, message and stream-event rendering.
"""

"""OpenAI Images (`/v1/images/generations`): routes and response rendering.
"""

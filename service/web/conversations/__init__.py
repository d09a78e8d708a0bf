"""OpenAI's Conversations API over the gateway's own conversations.
"""

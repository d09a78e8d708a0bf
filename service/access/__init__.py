"""Who may call and how much: API keys (static and managed) and their per-key rate limits.
"""

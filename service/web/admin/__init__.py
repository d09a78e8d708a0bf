"""The operators' admin API: the account pool and managed API keys (Bearer ADMIN_KEY).
"""

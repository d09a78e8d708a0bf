"""Runtime plumbing both tiers share: settings, logging, metrics, Redis connections, the embedded Redis.

Nothing here knows what a turn is; everything else imports it.
"""

"""The error of reading an account capture (`capture`, `shell_words`)."""

from __future__ import annotations


class CaptureError(ValueError):
    """The text is not a usable cURL copy or HAR; the message says why (never a cookie value)."""

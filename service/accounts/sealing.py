"""Account secrets (cookies, access tokens) encrypted at rest with a key derived from SECRET_KEY.

Fernet (AES-128-CBC + HMAC-SHA256, from `cryptography`) under a key that HKDF derives
from `SECRET_KEY`, so the server secret itself is never used directly as a cipher key and
other uses of SECRET_KEY (HMAC owner tags) stay independent. Anonymous accounts carry no
secret, so a deployment without cookies needs no SECRET_KEY; sealing a non-empty secret
without one is refused rather than stored in clear.

Opened secrets are remembered by their ciphertext (`Sealer.open`): every turn opens its
account's cookies, token and proxy on the way to the first token, and a Fernet check and
decryption each time cost more than the rest of the account's set-up. A changed secret is a
new ciphertext (Fernet's IV and timestamp are fresh on every seal), so nothing goes stale;
another SECRET_KEY is another `Sealer`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

OPENED_KEPT = 1024
"""Opened secrets one `Sealer` remembers (three per account); past it, it starts afresh."""


class SealingError(Exception):
    """A secret cannot be sealed or opened (no SECRET_KEY, or a different one)."""


class Sealer:
    """Seals and opens account secrets under one SECRET_KEY."""

    def __init__(self, secret_key: str) -> None:
        self._fernet: Fernet | None = None
        self._mac_key = b""
        self._opened: dict[str, str] = {}  # ciphertext → secret (see the module docstring)
        if secret_key:
            material = HKDF(
                algorithm=hashes.SHA256(), length=64, salt=b"gateway-accounts-v1", info=b"account secrets"
            ).derive(secret_key.encode())
            self._fernet = Fernet(base64.urlsafe_b64encode(material[:32]))
            self._mac_key = material[32:]

    def seal(self, secret: str) -> str:
        """The ciphertext of `secret` ("" stays "": nothing to hide)."""
        if not secret:
            return ""
        if self._fernet is None:
            raise SealingError(
                "SECRET_KEY is required to store account cookies or access tokens (they are encrypted "
                "at rest with it); generate one: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return self._fernet.encrypt(secret.encode()).decode()

    def open(self, sealed: str) -> str:
        """The secret behind `sealed` (remembered: the same ciphertext always opens the same)."""
        if not sealed:
            return ""
        opened = self._opened.get(sealed)
        if opened is not None:
            return opened
        if self._fernet is None:
            raise SealingError("SECRET_KEY is not set, so the stored account secrets cannot be read")
        try:
            opened = self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise SealingError(
                "the stored account secrets were sealed with another SECRET_KEY; "
                "restore it or re-enter the cookies through the admin API"
            ) from None
        if len(self._opened) >= OPENED_KEPT:
            self._opened.clear()
        self._opened[sealed] = opened
        return opened

    def digest(self, text: str) -> str:
        """A keyed digest, to notice a changed seed line without storing it in clear."""
        return hmac.new(self._mac_key or b"no-secret", text.encode(), hashlib.sha256).hexdigest()[:32]

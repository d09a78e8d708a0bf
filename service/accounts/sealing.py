"""Account secrets (cookies, access tokens) encrypted at rest with a key derived from SECRET_KEY.

Fernet (AES-128-CBC + HMAC-SHA256, from `cryptography`) under a key that HKDF derives
from `SECRET_KEY`, so the server secret itself is never used directly as a cipher key and
other uses of SECRET_KEY (HMAC owner tags) stay independent. Anonymous accounts carry no
secret, so a deployment without cookies needs no SECRET_KEY; sealing a non-empty secret
without one is refused rather than stored in clear.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class SealingError(Exception):
    """A secret cannot be sealed or opened (no SECRET_KEY, or a different one)."""


class Sealer:
    """Seals and opens account secrets under one SECRET_KEY."""

    def __init__(self, secret_key: str) -> None:
        self._fernet: Fernet | None = None
        self._mac_key = b""
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
        """The secret behind `sealed`."""
        if not sealed:
            return ""
        if self._fernet is None:
            raise SealingError("SECRET_KEY is not set, so the stored account secrets cannot be read")
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise SealingError(
                "the stored account secrets were sealed with another SECRET_KEY; "
                "restore it or re-enter the cookies through the admin API"
            ) from None

    def digest(self, text: str) -> str:
        """A keyed digest, to notice a changed seed line without storing it in clear."""
        return hmac.new(self._mac_key or b"no-secret", text.encode(), hashlib.sha256).hexdigest()[:32]

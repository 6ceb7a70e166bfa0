"""Keys derived from the one secret key: one per purpose, never the key itself."""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from modhub.errors import ModhubError


def derive_key(secret: str, purpose: str) -> bytes:
    """Return 32 bytes derived from `secret` for `purpose` (HKDF-SHA256)."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode())
    return hkdf.derive(secret.encode())


class SecretBox:
    """Encrypts config secrets at rest (Fernet: AES-128-CBC with HMAC-SHA256)."""

    def __init__(self, secret: str) -> None:
        self._fernet = Fernet(base64.urlsafe_b64encode(derive_key(secret, "modhub config")))

    def seal(self, plaintext: str) -> str:
        """Return the encrypted form of `plaintext`."""
        return self._fernet.encrypt(plaintext.encode()).decode()

    def open(self, token: str) -> str:
        """Return the plaintext of a sealed value."""
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise ModhubError(
                "a stored secret cannot be decrypted: MODHUB_SECRET_KEY has changed"
            ) from None

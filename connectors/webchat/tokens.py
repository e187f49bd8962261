"""Signatures of the web chat channel (pure): visitor tokens, upload receipts, file links, and
the signed identity a host site passes for its signed-in users.

Visitor ids are issued by the server, never chosen by the browser: a visitor token is
``<visitor id>.<binding>.<signature>``, signed with the connector's key. The binding ties a
visitor to the signed-in user it was issued for (empty for an anonymous visitor), so a browser
shared by two users never shows the second one the first one's chat.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

_SEP = "\x1f"
_VISITOR_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_PART = re.compile(r"^[A-Za-z0-9_-]*$")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def new_visitor_id() -> str:
    """22 url-safe characters (128 random bits): a valid ``webchat:`` identifier value."""
    return secrets.token_urlsafe(16)


def new_session_id() -> str:
    return "s" + secrets.token_urlsafe(12)


def identity_hash(secret: bytes, user_id: str, email: str) -> str:
    """What the host site computes for a signed-in user: hex HMAC-SHA256 with the inbox
    secret over ``user_id + "\\n" + email`` (either may be empty, not both)."""
    return hmac.new(secret, f"{user_id}\n{email}".encode(), hashlib.sha256).hexdigest()


def identity_hash_ok(secret: bytes, user_id: str, email: str, given: str) -> bool:
    expected = identity_hash(secret, user_id, email)
    return hmac.compare_digest(expected.encode(), given.strip().lower().encode())


class Signer:
    """HMAC-SHA256 signatures under the connector's key, domain-separated by purpose."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the web chat signing key must be at least 16 bytes")
        self._key = key

    def __repr__(self) -> str:
        return "Signer(<key>)"

    def _sig(self, *parts: str, size: int = 32) -> str:
        mac = hmac.new(self._key, _SEP.join(parts).encode(), hashlib.sha256).digest()
        return _b64(mac)[:size]

    # ------------------------------------------------------------------ visitors
    def binding(self, inbox: str, user_key: str | None) -> str:
        """Short tag of the signed-in user a visitor belongs to ("" = anonymous)."""
        return "" if not user_key else self._sig("bind", inbox, user_key, size=16)

    def visitor_token(self, inbox: str, visitor_id: str, binding: str = "") -> str:
        return f"{visitor_id}.{binding}.{self._sig('visitor', inbox, visitor_id, binding)}"

    def check_visitor(self, inbox: str, token: object) -> tuple[str, str] | None:
        """(visitor id, binding) of a valid token of this inbox; None otherwise."""
        if not isinstance(token, str) or len(token) > 200:
            return None
        parts = token.split(".")
        if len(parts) != 3:
            return None
        vid, binding, sig = parts
        if not _VISITOR_ID.match(vid) or not _PART.match(binding):
            return None
        expected = self._sig("visitor", inbox, vid, binding)
        return (vid, binding) if hmac.compare_digest(expected, sig) else None

    # ------------------------------------------------------------------ uploads and files
    def upload(
        self, inbox: str, visitor_id: str, sha256: str, name: str, type_: str, size: int
    ) -> str:
        """Receipt of an upload: the widget sends it back with the message that uses it."""
        return self._sig("upload", inbox, visitor_id, sha256, name, type_, str(size))

    def upload_ok(
        self, inbox: str, visitor_id: str, sha256: str, name: str, type_: str, size: int, given: str
    ) -> bool:
        expected = self.upload(inbox, visitor_id, sha256, name, type_, size)
        return hmac.compare_digest(expected, given)

    def file(self, inbox: str, visitor_id: str, sha256: str, type_: str) -> str:
        """Signature of a link to one blob of one visitor's chat (history, uploads)."""
        return self._sig("file", inbox, visitor_id, sha256, type_)

    def file_ok(self, inbox: str, visitor_id: str, sha256: str, type_: str, given: str) -> bool:
        return hmac.compare_digest(self.file(inbox, visitor_id, sha256, type_), given)

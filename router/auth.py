"""Agents' passwords (argon2id hashes) and login sessions (random tokens, stored hashed)."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from hub.web import hash_token
from store import agents, sessions
from store.mongo import Doc, Store

MIN_PASSWORD = 10
MAX_PASSWORD = 1024

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
# Verified when the email is unknown, so a wrong email takes as long as a wrong password.
_DUMMY = _hasher.hash(secrets.token_urlsafe(16))


class LoginFailed(Exception):
    """Wrong email or password, or a deactivated agent (the caller cannot tell which)."""


def check_password_rules(password: object) -> str:
    """The password if acceptable; raises ValueError saying what is wrong."""
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise ValueError(f"a string of {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    return password


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored or _DUMMY, password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


async def login(
    store: Store, email: str, password: str, now: datetime, ttl: float
) -> tuple[str, Doc, datetime]:
    """Check the credentials and open a session: (token, agent, expires_at)."""
    doc = await agents.by_email(store, email.strip().casefold())
    ok = verify_password(doc.get("password_hash") if doc else None, password)
    if doc is None or not ok or not doc.get("active", True):
        raise LoginFailed("wrong email or password")
    if doc.get("password_hash") and _hasher.check_needs_rehash(doc["password_hash"]):
        await agents.update(store, doc["_id"], {"password_hash": hash_password(password)})
    token = secrets.token_urlsafe(32)
    expires = now + timedelta(seconds=ttl)
    session = {"_id": hash_token(token), "agent_id": doc["_id"], "created_at": now}
    await sessions.create(store, {**session, "expires_at": expires})
    doc.pop("password_hash", None)
    return token, doc, expires

"""Pure: web chat widget frames → :class:`Message`, and timeline documents → widget frames.

The widget speaks JSON frames over one WebSocket (README, "Web chat" has the whole protocol).
Nothing here does I/O: the service hands frames in, gets data or a :class:`FrameError` naming
the bad field back, and turns that into an ``error`` frame for the widget.

Identities, by how much they are worth:

* the visitor id (``webchat:<id>``) is issued and signed by the server: ``channel`` assurance;
* a signed-in user's ``user_id`` (→ ``api:<user_id>``, the id your systems use for that
  customer) and ``email``, signed by the host site with the inbox secret: ``channel``;
* what a visitor types into the pre-chat form (email, phone): ``claimed`` — it never merges
  customers by itself, it becomes a merge suggestion for an agent to confirm.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import orjson

from connectors.errors import InvalidPayload
from connectors.webchat.tokens import Signer, identity_hash_ok
from pipeline.contract import Attachment, Identifier, Message
from unify.identifiers import InvalidIdentifier, normalize

CHANNEL: Literal["webchat"] = "webchat"
FRAME_TYPES = frozenset({"hello", "message", "typing", "profile", "ping"})
CLIENT_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_ATTACHMENTS = 10
MAX_NAME = 128
MAX_FILENAME = 200
_KEEP_CONTROLS = {"\n", "\t"}


class FrameError(InvalidPayload):
    """A frame the widget must fix; ``code`` is what the ``error`` frame carries."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message, field)
        self.code = code


@dataclass(frozen=True)
class SignedIdentity:
    """A signed-in user of the host site, checked against the inbox secret."""

    user_id: str | None
    email: str | None
    name: str | None
    identifiers: tuple[Identifier, ...]

    @property
    def user_key(self) -> str:
        """What ties a visitor to this user (see tokens.Signer.binding)."""
        return f"{self.user_id or ''}\n{self.email or ''}"


@dataclass(frozen=True)
class Profile:
    """The pre-chat form: what the visitor says about themself."""

    name: str | None = None
    identifiers: tuple[Identifier, ...] = ()


@dataclass(frozen=True)
class Hello:
    visitor: str | None
    session: str | None
    identity: Any
    profile: Any


@dataclass(frozen=True)
class Outgoing:
    """A visitor's message, checked."""

    client_id: str
    text: str | None
    attachments: tuple[Attachment, ...] = field(default_factory=tuple)


# ---------------------------------------------------------------------------- frames
def decode(raw: str | bytes) -> dict[str, Any]:
    """A frame: a JSON object with a known ``type``."""
    try:
        frame = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise FrameError("invalid_frame", "a frame must be a JSON object") from None
    if not isinstance(frame, dict):
        raise FrameError("invalid_frame", "a frame must be a JSON object")
    kind = frame.get("type")
    if not isinstance(kind, str):
        raise FrameError("invalid_field", "type: required", "type")
    if kind not in FRAME_TYPES:
        known = ", ".join(sorted(FRAME_TYPES))
        raise FrameError(
            "unknown_type", f"type: unknown frame type {kind[:40]!r} ({known})", "type"
        )
    return frame


def _opt_str(frame: dict[str, Any], key: str, max_len: int, path: str | None = None) -> str | None:
    value = frame.get(key)
    if value is None:
        return None
    name = path or key
    if not isinstance(value, str) or len(value) > max_len:
        raise FrameError("invalid_field", f"{name}: a string of at most {max_len} characters", name)
    return value


def parse_hello(frame: dict[str, Any]) -> Hello:
    session = _opt_str(frame, "session", 64)
    if session is not None and not SESSION_ID.match(session):
        raise FrameError("invalid_field", "session: 8–64 of A-Z a-z 0-9 _ -", "session")
    for key in ("identity", "profile"):
        if frame.get(key) is not None and not isinstance(frame[key], dict):
            raise FrameError("invalid_field", f"{key}: an object", key)
    return Hello(
        visitor=_opt_str(frame, "visitor", 200),
        session=session,
        identity=frame.get("identity"),
        profile=frame.get("profile"),
    )


def parse_typing(frame: dict[str, Any]) -> Literal["start", "stop"]:
    state = frame.get("state", "start")
    if state == "start":
        return "start"
    if state == "stop":
        return "stop"
    raise FrameError("invalid_field", "state: 'start' or 'stop'", "state")


def _plain(text: str) -> str:
    """Drop control characters (keeping newlines and tabs) and surrounding blanks."""
    kept = (ch for ch in text if ch in _KEEP_CONTROLS or unicodedata.category(ch) != "Cc")
    return "".join(kept).strip()


def _name(value: Any, path: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise FrameError("invalid_field", f"{path}: a string", path)
    name = " ".join(_plain(value).split())
    if len(name) > MAX_NAME:
        raise FrameError("invalid_field", f"{path}: at most {MAX_NAME} characters", path)
    return name or None


# ---------------------------------------------------------------------------- identity
def verify_identity(raw: Any, secret: bytes | None) -> SignedIdentity:
    """Check a host site's signed identity; raises FrameError (``identity_invalid``) naming
    the field when it is missing, malformed or forged — the caller must then not use it."""
    if not isinstance(raw, dict):
        raise FrameError("identity_invalid", "identity: an object", "identity")
    if secret is None:
        raise FrameError(
            "identity_invalid",
            "identity: this inbox has no secret configured, so signed identities cannot be "
            "checked (set secret_env or secret_file for it)",
            "identity",
        )
    raw_id = raw.get("user_id")
    if isinstance(raw_id, int) and not isinstance(raw_id, bool):
        raw_id = str(raw_id)
    checked: dict[str, str] = {}
    for key, value in (("user_id", raw_id), ("email", raw.get("email"))):
        if value is None:
            continue
        if not isinstance(value, str) or len(value) > 256:
            raise FrameError(
                "identity_invalid",
                f"identity.{key}: a string of at most 256 characters",
                f"identity.{key}",
            )
        checked[key] = value
    user_id, email = checked.get("user_id", ""), checked.get("email", "")
    if not user_id and not email:
        raise FrameError(
            "identity_invalid", "identity: give user_id, email or both", "identity.user_id"
        )
    given = raw.get("hash")
    if not isinstance(given, str) or not given:
        raise FrameError("identity_invalid", "identity.hash: required", "identity.hash")
    if not identity_hash_ok(secret, user_id, email, given):
        raise FrameError(
            "identity_invalid",
            "identity.hash: does not match user_id and email (HMAC-SHA256 of "
            "user_id + '\\n' + email with the inbox secret); the identity was not used",
            "identity.hash",
        )
    idents: list[Identifier] = []
    for kind, key, value in (("api", "user_id", user_id), ("email", "email", email)):
        if not value:
            continue
        try:
            normalize(kind, value)
        except InvalidIdentifier as exc:
            raise FrameError(
                "identity_invalid", f"identity.{key}: {exc}", f"identity.{key}"
            ) from None
        idents.append(Identifier(kind=kind, value=value.strip(), assurance="channel"))  # type: ignore[arg-type]
    return SignedIdentity(
        user_id=user_id or None,
        email=email or None,
        name=_name(raw.get("name"), "identity.name"),
        identifiers=tuple(idents),
    )


def parse_profile(raw: Any, *, default_region: str = "IR") -> Profile:
    """The pre-chat form (name, email, phone): every value checked, identifiers ``claimed``."""
    if not isinstance(raw, dict):
        raise FrameError("invalid_field", "profile: an object", "profile")
    idents: list[Identifier] = []
    for kind in ("email", "phone"):
        value = raw.get(kind)
        if value is None or value == "":
            continue
        path = f"profile.{kind}"
        if not isinstance(value, str) or len(value) > 256:
            raise FrameError("invalid_field", f"{path}: a string", path)
        try:
            normalize(kind, value, default_region=default_region)
        except InvalidIdentifier as exc:
            raise FrameError("invalid_field", f"{path}: {exc}", path) from None
        idents.append(Identifier(kind=kind, value=value.strip(), assurance="claimed"))
    return Profile(name=_name(raw.get("name"), "profile.name"), identifiers=tuple(idents))


# ---------------------------------------------------------------------------- messages
def source_id(visitor_id: str, client_id: str) -> str:
    """Deterministic: a message resent after a reconnect is the same event (exactly once)."""
    return f"{visitor_id}/{client_id}"


def client_id_of(visitor_id: str, source: str) -> str | None:
    prefix = f"{visitor_id}/"
    return source[len(prefix) :] if source.startswith(prefix) else None


def parse_message(
    frame: dict[str, Any], *, max_text: int, inbox: str, visitor_id: str, signer: Signer
) -> Outgoing:
    client_id = frame.get("client_id")
    if not isinstance(client_id, str) or not CLIENT_ID.match(client_id):
        raise FrameError("invalid_field", "client_id: 8–64 of A-Z a-z 0-9 _ -", "client_id")
    text = frame.get("text")
    if text is not None:
        if not isinstance(text, str):
            raise FrameError("invalid_field", "text: a string", "text")
        text = _plain(text)
        if len(text) > max_text:
            raise FrameError(
                "too_large", f"text: longer than {max_text} characters ({len(text)})", "text"
            )
    raw_atts = frame.get("attachments") or []
    if not isinstance(raw_atts, list) or len(raw_atts) > MAX_ATTACHMENTS:
        raise FrameError(
            "invalid_field", f"attachments: a list of at most {MAX_ATTACHMENTS}", "attachments"
        )
    atts = tuple(
        _attachment(a, f"attachments.{i}", inbox, visitor_id, signer)
        for i, a in enumerate(raw_atts)
    )
    if not text and not atts:
        raise FrameError("invalid_field", "text: empty message", "text")
    return Outgoing(client_id=client_id, text=text or None, attachments=atts)


def _attachment(raw: Any, path: str, inbox: str, visitor_id: str, signer: Signer) -> Attachment:
    if not isinstance(raw, dict):
        raise FrameError("invalid_field", f"{path}: an upload receipt object", path)
    sha, name, type_, size, token = (
        raw.get(k) for k in ("sha256", "name", "type", "size", "token")
    )
    if not (
        isinstance(sha, str)
        and SHA256.match(sha)
        and isinstance(name, str)
        and isinstance(type_, str)
        and isinstance(size, int)
        and isinstance(token, str)
    ):
        raise FrameError(
            "invalid_field", f"{path}: sha256, name, type, size and token of an upload", path
        )
    if not signer.upload_ok(inbox, visitor_id, sha, name, type_, size, token):
        raise FrameError(
            "invalid_field",
            f"{path}.token: not a receipt of an upload of this visitor",
            f"{path}.token",
        )
    return Attachment.model_validate(
        {"name": name, "type": type_, "size": size, "sha256": sha, "ref": sha}
    )


def build_message(
    *,
    inbox: str,
    visitor_id: str,
    session: str,
    outgoing: Outgoing,
    now: datetime,
    identity: SignedIdentity | None = None,
    profile: Profile | None = None,
) -> Message:
    sender = [Identifier(kind="webchat", value=visitor_id, assurance="channel")]
    if identity is not None:
        sender += identity.identifiers
    if profile is not None:
        sender += [i for i in profile.identifiers if i not in sender]
    display = (identity.name if identity else None) or (profile.name if profile else None)
    return Message.model_validate(
        {
            "channel": CHANNEL,
            "direction": "in",
            "account": inbox,
            "source_id": source_id(visitor_id, outgoing.client_id),
            "sender": sender,
            "display_name": display,
            "thread": session,
            "occurred_at": now,
            "text": outgoing.text,
            "attachments": list(outgoing.attachments),
        }
    )


# ---------------------------------------------------------------------------- uploads
_MAGIC: dict[str, tuple[bytes, ...]] = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "application/pdf": (b"%PDF-",),
}


def sniff(data: bytes, declared: str, allowed: list[str]) -> str:
    """The upload's type, when its bytes are what it claims and the inbox takes it."""
    kind = declared.split(";", 1)[0].strip().lower()
    if kind not in allowed:
        raise FrameError(
            "unsupported_type",
            f"file: type {kind or 'unknown'!r} is not accepted (accepted: {', '.join(allowed)})",
            "file",
        )
    if kind == "image/webp":
        ok = data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    elif kind == "text/plain":
        try:
            ok = "\x00" not in data.decode("utf-8")
        except UnicodeDecodeError:
            ok = False
    else:
        ok = any(data.startswith(m) for m in _MAGIC.get(kind, ()))
    if not ok:
        raise FrameError("unsupported_type", f"file: the content is not {kind}", "file")
    return kind


def clean_filename(name: str | None) -> str:
    """A file name safe to show and to put in a header: no path, no controls, not too long."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = "".join(ch for ch in base if unicodedata.category(ch) != "Cc")
    base = " ".join(base.replace('"', "'").split())[:MAX_FILENAME]
    return base.lstrip(".") or "file"


# ---------------------------------------------------------------------------- history
def file_link(signer: Signer, inbox: str, visitor_id: str, att: dict[str, Any]) -> str:
    """Relative link to a blob of this visitor's chat, signed for this visitor only."""
    from urllib.parse import urlencode

    sig = signer.file(inbox, visitor_id, att["sha256"], att["type"])
    query = urlencode({"i": inbox, "v": visitor_id, "t": att["type"], "n": att["name"], "s": sig})
    return f"/files/{att['sha256']}?{query}"


def history_item(
    doc: dict[str, Any], *, signer: Signer, inbox: str, visitor_id: str
) -> dict[str, Any]:
    """One timeline document as the widget shows it (never another visitor's fields)."""
    at = doc.get("occurred_at")
    atts = [
        {
            "name": a.get("name"),
            "type": a.get("type"),
            "size": a.get("size"),
            "url": file_link(signer, inbox, visitor_id, a),
        }
        for a in doc.get("attachments") or []
        if isinstance(a, dict) and a.get("sha256") and not a.get("omitted")
    ]
    item: dict[str, Any] = {
        "id": doc["_id"],
        "direction": doc.get("direction", "in"),
        "text": doc.get("text"),
        "attachments": atts,
        "at": at.isoformat() if isinstance(at, datetime) else at,
    }
    client = client_id_of(visitor_id, str(doc.get("source_id") or ""))
    if client is not None and item["direction"] == "in":
        item["client_id"] = client
    return item

"""Pure: raw RFC 5322 / MIME bytes → :class:`Message` of channel ``email`` (no I/O).

The parser is built to survive real mail: it reads the raw header fields itself (the stdlib's
modern header API raises on some malformed fields), decodes every charset with fallbacks
(:mod:`connectors.email.text`) and never descends into attached messages. Anything that still
cannot become a valid :class:`Message` raises :class:`Unparseable`; the service then keeps the
raw bytes in GridFS and dead-letters them — mail is never dropped.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import Message as MimePart
from email.parser import HeaderParser
from email.policy import compat32
from email.utils import getaddresses, parsedate_to_datetime

from pydantic import ValidationError

from connectors.email import text as tx
from connectors.errors import InvalidPayload
from pipeline.contract import Attachment, Identifier, Message, MessageKind
from unify.identifiers import InvalidIdentifier, normalize_email

MAX_TEXT = 1_000_000
MAX_HTML = 5_000_000
MAX_ATTACHMENTS = 100
MAX_REFERENCES = 100
MAX_HOPS = 30  # Received headers; Postfix itself bounces at 50 (hopcount_limit)

# Header fields that relays add or rewrite on the way: not part of what the author sent.
_TRACE = re.compile(
    rb"^(received|return-path|delivered-to|x-original-to|x-delivered-to|received-spf|"
    rb"authentication-results|arc-[a-z-]+|x-spam-[a-z-]+|x-virus-[a-z-]+):",
    re.IGNORECASE,
)
_MSGID = re.compile(r"<([^<>\s]{1,998})>")
_AUTO_SUBJECT = re.compile(
    r"^\s*(auto(matic)?[ -]?(reply|response|antwort)|out of (the )?office|abwesenheit|"
    r"vacation|absence|réponse automatique|پاسخ خودکار|رد تلقائي)\b|^\s*auto:",
    re.IGNORECASE,
)
_BOUNCE_SUBJECT = re.compile(
    r"^\s*(undeliver(ed|able)|delivery (status notification|has failed|failure)|"
    r"returned mail|mail delivery failed|failure notice)",
    re.IGNORECASE,
)


class Unparseable(InvalidPayload):
    """The mail cannot become a valid Message (e.g. no usable sender address)."""


@dataclass(frozen=True)
class ParsedMail:
    """A Message plus what the service must store before publishing it."""

    message: Message
    blobs: dict[str, bytes] = field(default_factory=dict)
    """sha256 → bytes for the ``attachments`` bucket."""
    keep_raw: bool = False
    """The raw mail must go to the ``raw_mail`` bucket (an attachment was left out of GridFS)."""
    raw_sha256: str = ""
    fingerprint: str = ""
    """Hash of what the author sent (trace headers removed): tells apart two different mails
    that carry the same Message-ID, and is the id of mail without one."""
    message_id: str | None = None


def fingerprint(raw: bytes) -> str:
    """sha256 of the mail without trace headers and with normalised line ends.

    The same mail relayed twice, fetched over IMAP after arriving by SMTP, or re-delivered by
    an MTA after a lost 250 gets the same fingerprint; a different mail does not.
    """
    data = raw.replace(b"\r\n", b"\n")
    head, _sep, body = data.partition(b"\n\n")
    kept: list[bytes] = []
    skipping = False
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                kept.append(line)
            continue
        skipping = bool(_TRACE.match(line))
        if not skipping:
            kept.append(line)
    h = hashlib.sha256(b"\n".join(kept))
    h.update(b"\n\n")
    h.update(body.rstrip())
    return h.hexdigest()


# ---------------------------------------------------------------------------- raw headers
def _raw(part: MimePart, name: str) -> str | None:
    for key, value in part.raw_items():
        if key.lower() == name:
            return re.sub(r"\r?\n(?=[ \t])", "", str(value)).strip()
    return None


def _raw_all(part: MimePart, name: str) -> list[str]:
    return [
        re.sub(r"\r?\n(?=[ \t])", "", str(v)).strip()
        for k, v in part.raw_items()
        if k.lower() == name
    ]


def _msgid(value: str | None) -> str | None:
    if not value:
        return None
    m = _MSGID.search(value)
    token = m.group(1) if m else (value.split() or [""])[0].strip("<>")
    token = "".join(ch for ch in tx.unescape_8bit(token) if ch.isprintable() and not ch.isspace())
    if not token:
        return None
    if len(token) > 500:
        return "msgid-sha256:" + hashlib.sha256(token.encode()).hexdigest()
    return token


def _msgids(value: str | None) -> list[str]:
    if not value:
        return []
    out = [i for i in (_msgid(f"<{m}>") for m in _MSGID.findall(value)) if i]
    if len(out) > MAX_REFERENCES:  # keep the root (threading) and the most recent ones
        out = [out[0], *out[-(MAX_REFERENCES - 1) :]]
    return out


def _address(value: str | None) -> tuple[str | None, str | None]:
    """(display name, address) of the first address in a header value that has an '@'."""
    if not value:
        return None, None
    try:
        pairs = getaddresses([value])
    except Exception:  # the stdlib address parser has crashed on hostile input before
        pairs = []
    for name, addr in pairs:
        addr = tx.unescape_8bit(addr).strip().strip("<>")
        if "@" in addr:
            return tx.one_line(tx.decode_words(name), 256) or None, addr
    m = re.search(r"[^\s<>\"@,;]+@[^\s<>\"@,;]+", tx.unescape_8bit(value))
    return None, (m.group(0) if m else None)


def _valid(addr: str | None) -> str | None:
    if not addr or len(addr) > 320:
        return None
    try:
        normalize_email(addr)
    except InvalidIdentifier:
        return None
    return addr


def _date(value: str | None, received_at: datetime) -> datetime:
    if value:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            when = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            if datetime(1990, 1, 1, tzinfo=UTC) <= when <= received_at + timedelta(days=1):
                return when
    return received_at


# ---------------------------------------------------------------------------- MIME walk
def _leaves(part: MimePart) -> Iterator[MimePart]:
    """Every non-multipart part, not descending into attached messages (message/*)."""
    if part.get_content_maintype() == "message" or not part.is_multipart():
        yield part
        return
    payload = part.get_payload()
    if isinstance(payload, list):
        for sub in payload:
            if isinstance(sub, MimePart):
                yield from _leaves(sub)


def _disposition(part: MimePart) -> str | None:
    value = _raw(part, "content-disposition")
    return value.split(";", 1)[0].strip().lower() if value else None


def _filename(part: MimePart) -> str | None:
    try:
        name = part.get_filename() or part.get_param("name")
    except Exception:  # malformed RFC 2231 continuations
        name = None
    if isinstance(name, tuple):  # an RFC 2231 value get_param left undecoded
        name = name[2]
    if not isinstance(name, str) or not name.strip():
        return None
    name = tx.decode_words(name)
    name = re.sub(r"[\x00-\x1f\x7f]", "", name).replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name[:255] or None


def _payload(part: MimePart) -> bytes:
    if part.get_content_maintype() == "message":
        inner = part.get_payload()
        if isinstance(inner, list):
            try:
                return b"".join(m.as_bytes() for m in inner if isinstance(m, MimePart))
            except Exception:  # re-serialising a broken attached message: keep what we can
                return str(inner).encode("utf-8", "replace")
    try:
        data = part.get_payload(decode=True)
    except Exception:  # undecodable transfer encoding: keep the encoded form
        data = None
    if isinstance(data, bytes):
        return data
    raw = part.get_payload()
    return raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else b""


def _charset(part: MimePart) -> str | None:
    try:
        cs = part.get_param("charset")
    except Exception:  # a malformed Content-Type: treat as unlabelled
        return None
    if isinstance(cs, tuple):
        cs = cs[2]
    return cs if isinstance(cs, str) else None


_EXT = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/gif": ".gif",
    "application/pdf": ".pdf",
    "message/rfc822": ".eml",
    "text/calendar": ".ics",
}


@dataclass
class _Body:
    plain: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    blobs: dict[str, bytes] = field(default_factory=dict)
    keep_raw: bool = False
    report: list[MimePart] = field(default_factory=list)


def _walk(root: MimePart, max_attachment: int, raw_sha: str) -> _Body:
    body = _Body()
    for n, part in enumerate(_leaves(root)):
        ctype = part.get_content_type()
        disp = _disposition(part)
        name = _filename(part)
        if ctype in ("message/delivery-status", "text/rfc822-headers", "message/rfc822"):
            body.report.append(part)
        if ctype in ("text/plain", "text/html") and disp != "attachment" and not name:
            content = tx.decode_bytes(_payload(part), _charset(part))
            (body.plain if ctype == "text/plain" else body.html).append(content)
            continue
        data = _payload(part)
        if not data and not name:
            continue
        if len(body.attachments) >= MAX_ATTACHMENTS:
            body.keep_raw = True
            continue
        sha = hashlib.sha256(data).hexdigest()
        cid = _msgid(_raw(part, "content-id"))
        fallback = f"{'inline' if cid else 'attachment'}-{n}{_EXT.get(ctype, '')}"
        omitted = None
        if len(data) > max_attachment:
            omitted = f"larger than the attachment limit ({max_attachment} bytes)"
            body.keep_raw = True
        else:
            body.blobs[sha] = data
        body.attachments.append(
            Attachment(
                name=name or fallback,
                type=ctype[:255],
                size=len(data),
                sha256=sha,
                ref=raw_sha if omitted else sha,
                omitted=omitted,
            )
        )
    return body


# ---------------------------------------------------------------------------- classification
def _kind(root: MimePart, account: str, from_addr: str | None, subject: str) -> MessageKind:
    if len(_raw_all(root, "received")) > MAX_HOPS:
        return "loop"
    loops = " ".join(_raw_all(root, "x-loop") + _raw_all(root, "x-omnihub-loop")).lower()
    if account in loops or (from_addr or "").lower() == account:
        return "loop"
    ctype = root.get_content_type()
    report = (root.get_param("report-type") or "") if ctype == "multipart/report" else ""
    if (isinstance(report, str) and report.lower() == "delivery-status") or (
        _raw(root, "x-failed-recipients")
    ):
        return "bounce"
    sender = (from_addr or "").lower()
    if sender.startswith(("mailer-daemon@", "postmaster@")) and _BOUNCE_SUBJECT.search(subject):
        return "bounce"
    auto = (_raw(root, "auto-submitted") or "no").split(";", 1)[0].strip().lower()
    if auto != "no":
        return "auto_reply"
    for name in (
        "x-autoreply",
        "x-autorespond",
        "x-autogenerated",
        "x-auto-reply-from",
        "x-mail-autoreply",
        "x-autoresponse",
    ):
        if _raw(root, name) is not None:
            return "auto_reply"
    precedence = (_raw(root, "precedence") or "").lower()
    if precedence in ("auto_reply", "bulk", "junk"):
        return "auto_reply"
    if _AUTO_SUBJECT.search(subject):
        return "auto_reply"
    return "message"


def _bounce_details(report: list[MimePart]) -> tuple[str | None, list[str], str | None]:
    """(failed recipient, original References chain, original Message-ID) of a DSN."""
    recipient: str | None = None
    refs: list[str] = []
    original: str | None = None
    for part in report:
        ctype = part.get_content_type()
        blocks: list[MimePart] = []
        payload = part.get_payload()
        if ctype == "text/rfc822-headers":
            text = tx.decode_bytes(_payload(part), None)
            blocks = [HeaderParser(policy=compat32).parsestr(text)]
        elif isinstance(payload, list):
            blocks = [b for b in payload if isinstance(b, MimePart)]
        for block in blocks:
            if ctype == "message/delivery-status":
                final = _raw(block, "final-recipient") or _raw(block, "original-recipient")
                if final and recipient is None:
                    recipient = _valid(final.split(";", 1)[-1].strip())
            else:
                original = original or _msgid(_raw(block, "message-id"))
                refs = refs or _msgids(_raw(block, "references"))
    return recipient, refs, original


# ---------------------------------------------------------------------------- entry point
def parse_mail(
    raw: bytes,
    *,
    account: str,
    received_at: datetime,
    envelope_from: str | None = None,
    max_attachment_bytes: int = 20 * 1024 * 1024,
) -> ParsedMail:
    """Turn one raw mail received for inbox ``account`` into a :class:`ParsedMail`.

    ``source_id`` is the Message-ID without angle brackets. Mail without one gets
    ``sha256:<fingerprint>`` — deterministic, so an MTA's retry or a second IMAP fetch of the
    same mail is the same event (and deduplicated), while a different mail never collides.
    Raises :class:`Unparseable` when no valid Message can be made.
    """
    account = account.strip().lower()
    raw_sha = hashlib.sha256(raw).hexdigest()
    fp = fingerprint(raw)
    try:
        root = message_from_bytes(raw, policy=compat32)
    except Exception as exc:  # the stdlib parser is lenient; this is a last resort
        raise Unparseable(f"MIME structure unreadable: {type(exc).__name__}") from None

    subject = tx.one_line(tx.decode_words(_raw(root, "subject")), 2048)
    display_name, from_addr = _address(_raw(root, "from"))
    own_id = _msgid(_raw(root, "message-id"))
    in_reply_to = _msgid(_raw(root, "in-reply-to"))
    references = _msgids(_raw(root, "references"))
    kind = _kind(root, account, from_addr, subject)

    body = _walk(root, max_attachment_bytes, raw_sha)
    sender = _valid(from_addr)
    if sender is None:
        for name in ("sender", "reply-to", "return-path"):
            _, candidate = _address(_raw(root, name))
            if (sender := _valid(candidate)) is not None:
                break
    if sender is None:
        sender = _valid((envelope_from or "").strip("<>"))
    if kind == "bounce":
        failed, orig_refs, orig_id = _bounce_details(body.report)
        # A bounce belongs on the timeline of the customer whose address failed, in the
        # thread of the mail that bounced.
        sender = failed or sender
        in_reply_to = in_reply_to or orig_id
        references = references or orig_refs or ([orig_id] if orig_id else [])
        if failed:
            display_name = None
    if sender is None:
        raise Unparseable("no valid sender address in From, Sender, Reply-To or the envelope")

    plain = "\n\n".join(p for p in body.plain if p.strip())
    html_raw = "\n".join(body.html)
    html = tx.sanitize_html(html_raw, MAX_HTML) if html_raw.strip() else None
    full = tx.clean_text(plain, MAX_TEXT) if plain.strip() else None
    if full is None and html_raw.strip():
        full = tx.html_to_text(html_raw, MAX_TEXT) or None
    new_text, quoted = tx.split_quoted(full) if full else (None, None)
    new_text = (new_text or "").rstrip() or None

    source_id = own_id or f"sha256:{fp}"
    thread = (references[0] if references else None) or in_reply_to or source_id
    try:
        message = Message(
            channel="email",
            direction="in",
            account=account,
            source_id=source_id,
            sender=[Identifier(kind="email", value=sender, assurance="channel")],
            display_name=display_name,
            thread=thread,
            occurred_at=_date(_raw(root, "date"), received_at),
            subject=subject or None,
            text=new_text,
            html=html or None,
            attachments=body.attachments,
            kind=kind,
            quoted_text=quoted,
            in_reply_to=in_reply_to,
            references=references,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ()))
        raise Unparseable(f"{loc}: {first.get('msg', 'invalid')}", loc or None) from None
    return ParsedMail(
        message=message,
        blobs=body.blobs,
        keep_raw=body.keep_raw,
        raw_sha256=raw_sha,
        fingerprint=fp,
        message_id=own_id,
    )

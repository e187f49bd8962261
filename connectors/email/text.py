"""Pure text helpers of the email channel: charsets, RFC 2047 words, HTML, quoted history.

Real mail lies about its charset, splits multi-byte characters across encoded words and sends
8-bit bytes with no charset at all. Every function here returns *something readable* and
never raises on bad input: a wrong guess costs a few odd characters, a crash would lose mail.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re

import nh3
from charset_normalizer import from_bytes
from inscriptis import get_text

# Labels seen in the wild that Python's codec registry does not know (or knows wrongly).
_ALIASES = {
    "iso-8859-8-i": "iso-8859-8",
    "iso-8859-6-i": "iso-8859-6",
    "iso-8859-6-e": "iso-8859-6",
    "x-mac-arabic": "mac-arabic",
    "unicode-1-1-utf-7": "utf-7",
    "x-unknown": "",
    "unknown-8bit": "",
    "x-user-defined": "",
    "default": "",
    "charset": "",
}
# Labels that are often put on text that is really UTF-8 (or really windows-1252).
_WEAK = {"ascii", "us-ascii", "iso8859-1", "latin-1", "iso-8859-1", "cp1252", "windows-1252"}
_DETECT_BYTES = 64 * 1024


def codec_for(label: str | None) -> str | None:
    """A Python text codec name for a MIME charset label, or None when it is unusable."""
    if not label:
        return None
    name = label.strip().strip("\"'").lower()
    name = _ALIASES.get(name, name)
    if not name:
        return None
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        return None
    # base64, rot13, zlib … are codecs too, but not text encodings
    if not getattr(info, "_is_text_encoding", True):
        return None
    return info.name


def decode_bytes(data: bytes, label: str | None = None) -> str:
    """Decode text whose declared charset (``label``) may be missing, unknown or wrong."""
    if not data:
        return ""
    codec = codec_for(label)
    ascii_only = data.isascii()
    if ascii_only:
        return data.decode("ascii")
    if codec is None or codec in _WEAK or codec.replace("_", "-") in _WEAK:
        # 8-bit with no (or a 7-bit/Western) label: UTF-8 when it validates — by far the most
        # common mislabelling — else what the label says, else a statistical guess.
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            pass
    if codec is not None and codec not in ("ascii",):
        try:
            return data.decode(codec)
        except (UnicodeDecodeError, LookupError):
            pass
    guess = _detect(data)
    if guess is not None:
        try:
            return data.decode(guess, errors="replace")
        except LookupError:
            pass
    return data.decode("utf-8", errors="replace")


def _detect(data: bytes) -> str | None:
    try:
        best = from_bytes(data[:_DETECT_BYTES]).best()
    except Exception:  # a detector bug must not lose the mail; we fall back to UTF-8
        return None
    return None if best is None else codec_for(best.encoding)


def unescape_8bit(value: str) -> str:
    """Header text as parsed from bytes keeps raw 8-bit as surrogates: decode them properly."""
    if not any("\udc80" <= ch <= "\udcff" for ch in value):
        return value
    return decode_bytes(value.encode("utf-8", "surrogateescape"))


_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")


def _word_bytes(encoding: str, payload: str) -> bytes | None:
    try:
        if encoding in "bB":
            raw = payload.encode("ascii", "ignore")
            raw += b"=" * (-len(raw) % 4)
            return base64.b64decode(raw, validate=False)
        return binascii.a2b_qp(payload.replace("_", " ").encode("ascii", "ignore"), header=True)
    except (binascii.Error, ValueError):
        return None


def decode_words(value: str | None) -> str:
    """Decode RFC 2047 encoded words (and raw 8-bit) in a header value; never raises.

    Adjacent words in one charset are joined *before* decoding because many mailers split a
    multi-byte character across two words; whitespace between encoded words is dropped.
    """
    if not value:
        return ""
    value = unescape_8bit(value)
    out: list[str] = []
    pending: list[bytes] = []
    pending_cs: str | None = None
    pos = 0

    def flush() -> None:
        nonlocal pending, pending_cs
        if pending:
            out.append(decode_bytes(b"".join(pending), pending_cs))
        pending, pending_cs = [], None

    for m in _WORD.finditer(value):
        gap = value[pos : m.start()]
        charset = m.group(1).split("*", 1)[0]
        data = _word_bytes(m.group(2), m.group(3))
        if data is None:
            flush()
            out.append(gap + m.group(0))
            pos = m.end()
            continue
        if gap and not (gap.isspace() and pending):
            flush()
            out.append(gap)
        if pending and charset.lower() != (pending_cs or "").lower():
            flush()
        pending.append(data)
        pending_cs = charset
        pos = m.end()
    flush()
    out.append(value[pos:])
    return "".join(out)


def clean_text(value: str, limit: int) -> str:
    """Drop NUL and other C0 controls except tab/newline; cap the length."""
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    value = "".join(ch for ch in value if ch >= " " or ch in "\n\t")
    return value[:limit]


def one_line(value: str, limit: int) -> str:
    return " ".join(clean_text(value, limit * 2).split())[:limit]


# ---------------------------------------------------------------------------- HTML
_URL_SCHEMES = {"http", "https", "mailto", "tel", "cid", "data"}


def sanitize_html(html: str, limit: int) -> str:
    """Safe HTML for the agent console: no scripts, styles, handlers or forms."""
    try:
        return nh3.clean(html[: limit * 2], url_schemes=_URL_SCHEMES)[:limit]
    except Exception:  # the sanitiser must never cost us the mail: drop the HTML instead
        return ""


def html_to_text(html: str, limit: int) -> str:
    try:
        text = get_text(html)
    except Exception:  # lxml can choke on pathological markup: strip tags crudely instead
        text = re.sub(r"<[^>]*>", " ", html)
    lines = [ln.rstrip() for ln in text.splitlines()]
    joined = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return clean_text(joined, limit)


# ---------------------------------------------------------------------------- quoted history
_ATTRIBUTION = re.compile(
    r"^\s*("
    r"on\b.{0,300}\bwrote\s*:"
    r"|(am|le|el|il|op|em)\b.{0,300}\b(schrieb|a écrit|escribió|ha scritto|schreef|escreveu)\s*:"
    r"|در\s+تاریخ.{0,300}نوشت\s*:?"
    r"|.{0,300}\sنوشت\s*:"
    r"|في\s.{0,300}كتب\s*:?"
    r")\s*$",
    re.IGNORECASE,
)
_SEPARATOR = re.compile(
    r"^\s*(-{2,}\s*(original message|ursprüngliche nachricht|message d'origine|"
    r"پیام اصلی|الرسالة الأصلية)\s*-{2,}|_{20,})\s*$",
    re.IGNORECASE,
)
_OUTLOOK_FROM = re.compile(r"^\s*(from|von|de|از|من)\s*:\s*\S", re.IGNORECASE)
_OUTLOOK_NEXT = re.compile(r"^\s*(sent|date|gesendet|envoyé|تاریخ|ارسال|to)\s*:", re.IGNORECASE)


def split_quoted(text: str) -> tuple[str, str | None]:
    """The new text of a reply and the quoted history below it (None when there is none).

    Cuts at an attribution line ("On … wrote:", Persian "… نوشت:"), an "Original Message"
    separator, an Outlook header block, or a trailing block of ">" lines. Interleaved answers
    ("> question" / "answer" / "> question" / "answer") are all new text: nothing is cut.
    """
    lines = text.split("\n")
    cut = _first_cut(lines)
    if cut is None:
        return text, None
    new = "\n".join(lines[:cut]).rstrip()
    quoted = "\n".join(lines[cut:]).strip("\n")
    if not new.strip():
        return text, None
    return new, quoted or None


def _first_cut(lines: list[str]) -> int | None:
    for i, line in enumerate(lines):
        if _SEPARATOR.match(line):
            return i
        if _OUTLOOK_FROM.match(line) and any(
            _OUTLOOK_NEXT.match(nxt) for nxt in lines[i + 1 : i + 4]
        ):
            return i
        if line.lstrip().startswith(">") or not line.strip():
            continue
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        attribution = _ATTRIBUTION.match(line) or (
            nxt.strip() and not _ATTRIBUTION.match(nxt) and _ATTRIBUTION.match(f"{line} {nxt}")
        )
        if attribution and _only_quotes_after(lines, i + 1):
            return i
    # a trailing block of quoted lines (">"), with the attribution just above if any
    end = len(lines)
    i = end
    while i > 0 and (not lines[i - 1].strip() or lines[i - 1].lstrip().startswith(">")):
        i -= 1
    if i < end and any(ln.lstrip().startswith(">") for ln in lines[i:end]):
        if i > 0 and lines[i - 1].rstrip().endswith(":") and len(lines[i - 1]) < 400:
            i -= 1
        return i
    return None


def _only_quotes_after(lines: list[str], start: int) -> bool:
    """True unless answers are interleaved with the quotes below an attribution line."""
    seen_quote = False
    for line in lines[start:]:
        s = line.strip()
        if not s:
            continue
        if s.startswith(">"):
            seen_quote = True
        elif seen_quote:
            return False
    return True

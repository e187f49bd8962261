"""Canonical customer identifiers, so one person is one key on every channel.

The same customer reaches us as ``۰۹۱۲ ۱۲۳ ۴۵۶۷`` on SMS, ``+98 912 123 4567`` in a web form and
``Ali@Example.com`` by mail. Identity unification and the store only ever compare strings, so
every identifier is reduced here, once, to one ``kind:value`` spelling; anything we cannot
reduce with confidence is refused with a reason rather than stored in a form that would split
(or wrongly merge) a customer. Kept pure so it can run anywhere in the pipeline and be fuzzed.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import NoReturn

import phonenumbers
from email_validator import EmailNotValidError, validate_email

KINDS: frozenset[str] = frozenset({"phone", "email", "telegram", "webchat", "api"})


class InvalidIdentifier(ValueError):
    """Raised with a human-readable .reason (also str(exc)) and .kind, .raw attributes.

    The reason never repeats the raw value, so it is meant to be logged; ``.raw`` is the untouched
    input (personal data: do not log it).
    """

    def __init__(self, reason: str, kind: str | None = None, raw: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind
        self.raw = raw

    def __reduce__(self) -> tuple[type[InvalidIdentifier], tuple[str, str | None, str | None]]:
        return (type(self), (self.reason, self.kind, self.raw))


def _fail(kind: str, raw: str, reason: str) -> NoReturn:
    raise InvalidIdentifier(reason, kind, raw)


def _text(raw: object) -> str:
    if not isinstance(raw, str):
        raise TypeError(f"identifier must be str, not {type(raw).__name__}")
    return raw


def _blank(c: str) -> bool:
    """Whitespace or an invisible format character (ZWNJ, RLM/LRM, bidi controls, BOM)."""
    return c.isspace() or unicodedata.category(c) == "Cf"


def _trim(s: str) -> str:
    i, j = 0, len(s)
    while i < j and _blank(s[i]):
        i += 1
    while j > i and _blank(s[j - 1]):
        j -= 1
    return s[i:j]


def _ascii_digits(s: str) -> str:
    """Any Unicode decimal digit (Persian ۰-۹, Arabic-Indic ٠-٩, fullwidth, ...) to 0-9."""
    return "".join(str(unicodedata.decimal(c)) if c.isdecimal() else c for c in s)


# --- phone -------------------------------------------------------------------------------------

_PHONE_SEPARATORS = frozenset(".()\u2212")  # plus every space, format char and dash (Pd)
_PLUS_SIGNS = frozenset("+\uff0b")
_VALIDATION_REASONS = {
    phonenumbers.ValidationResult.TOO_SHORT: "too short",
    phonenumbers.ValidationResult.TOO_LONG: "too long",
    phonenumbers.ValidationResult.INVALID_LENGTH: "wrong number of digits",
    phonenumbers.ValidationResult.IS_POSSIBLE_LOCAL_ONLY: "too short",
    phonenumbers.ValidationResult.INVALID_COUNTRY_CODE: "unknown country code",
}
# Anything else phonenumbers.parse rejects, once only digits are left, has too few of them.
_PARSE_REASONS = {
    phonenumbers.NumberParseException.INVALID_COUNTRY_CODE: "unknown country code",
    phonenumbers.NumberParseException.TOO_LONG: "too long",
}


def _phone_symbols(raw: str) -> str:
    """Reduce to ``[+]digits`` or return a reason (prefixed with '!') why that is impossible."""
    s = _trim(raw)
    if s[:4].lower() == "tel:":
        s = s[4:]
    out: list[str] = []
    for c in s:
        if c.isdecimal():
            out.append(str(unicodedata.decimal(c)))
        elif c in _PLUS_SIGNS:
            if out:
                return "!'+' is only allowed at the start"
            out.append("+")
        elif not (_blank(c) or c in _PHONE_SEPARATORS or unicodedata.category(c) == "Pd"):
            return "!contains letters or symbols"
    return "".join(out)


def _phone_reason(num: phonenumbers.PhoneNumber) -> str:
    why = phonenumbers.is_possible_number_with_reason(num)
    if why == phonenumbers.ValidationResult.IS_POSSIBLE:
        why = phonenumbers.is_possible_number_for_type_with_reason(
            num, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE
        )
    return _VALIDATION_REASONS.get(why, "not an assigned number range")


def normalize_phone(raw: str, default_region: str = "IR") -> str:
    """Return the E.164 form (``+989121234567``) or raise InvalidIdentifier.

    ``default_region`` (ISO 3166 alpha-2, any case) applies to numbers written without a
    country code; an unknown region is a programming error and raises plain ValueError.
    """
    raw = _text(raw)
    region = default_region.upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"unknown default_region {default_region!r}")
    symbols = _phone_symbols(raw)
    where = "" if symbols.startswith("+") else f" for region {region}"
    prefix = f"not a valid phone number{where}: "
    if symbols.startswith("!"):
        _fail("phone", raw, prefix + symbols[1:])
    if not symbols.lstrip("+"):
        _fail("phone", raw, prefix + "empty")
    if len(symbols) > 18:
        _fail("phone", raw, prefix + "too long")
    # '00' is the international prefix almost everywhere; phonenumbers only knows the region's.
    candidates = [symbols] + (["+" + symbols[2:]] if symbols.startswith("00") else [])
    reason = ""
    for candidate in candidates:
        try:
            num = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException as exc:
            reason = reason or _PARSE_REASONS.get(exc.error_type, "too short")
            continue
        if phonenumbers.is_valid_number(num):
            return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
        reason = reason or _phone_reason(num)
    _fail("phone", raw, prefix + reason)


# --- email -------------------------------------------------------------------------------------

_GMAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})


def normalize_email(raw: str, *, fold: bool = False) -> str:
    """Return ``local@ascii-domain``, both lower-case, or raise InvalidIdentifier.

    ``fold`` merges provider aliases (``+tag``; Gmail dots and googlemail.com) that reach the
    same mailbox. It is off by default because it is a guess about other people's servers.
    """
    raw = _text(raw)
    s = _trim(raw)
    if s.startswith("<") and s.endswith(">"):
        s = _trim(s[1:-1])
    if s[:7].lower() == "mailto:":
        s = _trim(s[7:])
    if "@" not in s:
        _fail("email", raw, "not a valid email address: missing '@'")
    try:
        info = validate_email(s, check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError as exc:
        _fail("email", raw, f"not a valid email address: {exc}")
    local = unicodedata.normalize("NFC", info.local_part.lower())
    domain = info.ascii_domain.lower()
    if fold:
        if domain in _GMAIL_DOMAINS:
            local, domain = local.replace(".", "") or local, "gmail.com"
        base = local.split("+", 1)[0]
        if base and not base.endswith("."):
            local = base
    return f"{local}@{domain}"


# --- telegram, webchat, api --------------------------------------------------------------------

_MAX_TELEGRAM_ID = 2**63 - 1
_WEBCHAT_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_API_FORBIDDEN = frozenset({"Cc", "Cs", "Zl", "Zp"})


def _normalize_telegram(raw: str) -> str:
    s = _trim(raw).removeprefix("+")
    digits = _ascii_digits(s).lstrip("0") if s.isdecimal() else ""
    why = "must be a decimal number" if not s.isdecimal() else "must be positive, got zero"
    if s[:1] in ("-", "\u2212"):
        why = "negative ids are groups or channels"
    elif len(digits) > 19 or (digits and int(digits) > _MAX_TELEGRAM_ID):
        why = "too large"
    elif digits:
        return digits
    _fail("telegram", raw, "not a Telegram user id: " + why)


def _normalize_webchat(raw: str) -> str:
    s = _trim(raw)
    if not _WEBCHAT_ID.fullmatch(s):
        why = "longer than 128 characters" if len(s) > 128 else "only A-Z a-z 0-9 _ - allowed"
        _fail("webchat", raw, "not a webchat visitor id: " + (why if s else "empty"))
    return s


def _normalize_api(raw: str) -> str:
    s = _trim(raw)
    why = "" if s else "empty"
    if len(s) > 256:
        why = "longer than 256 characters"
    elif any(unicodedata.category(c) in _API_FORBIDDEN for c in s):
        why = "contains control characters"
    if why:
        _fail("api", raw, "not an API external id: " + why)
    return s


# --- public entry points -----------------------------------------------------------------------


NORMALIZED_CACHE = 16384
"""raw identifiers whose normalised form is remembered: customers write again and again from
the same number or address, and parsing a phone number is the worker's largest cost per
message after decoding it (a failure is not remembered: it raises every time)"""


def normalize(kind: str, raw: str, *, default_region: str = "IR", fold_email: bool = False) -> str:
    """Return the normalised 'kind:value' string or raise InvalidIdentifier(reason)."""
    if type(kind) is str and type(raw) is str:
        return _normalize_cached(kind, raw, default_region, fold_email)
    return _normalize(kind, raw, default_region, fold_email)


def _normalize(kind: str, raw: str, default_region: str, fold_email: bool) -> str:
    raw = _text(raw)
    k = _text(kind).strip().lower()
    if k == "phone":
        return "phone:" + normalize_phone(raw, default_region)
    if k == "email":
        return "email:" + normalize_email(raw, fold=fold_email)
    if k == "telegram":
        return "telegram:" + _normalize_telegram(raw)
    if k == "webchat":
        return "webchat:" + _normalize_webchat(raw)
    if k == "api":
        return "api:" + _normalize_api(raw)
    raise InvalidIdentifier(f"unknown identifier kind {kind!r}", kind, raw)


_normalize_cached = functools.lru_cache(maxsize=NORMALIZED_CACHE)(_normalize)


_PREFIX = re.compile(r"\s*([A-Za-z][A-Za-z0-9_-]*)\s*:(.*)", re.DOTALL)


def parse_identifier(text: str, *, default_region: str = "IR", fold_email: bool = False) -> str:
    """Normalise ``kind:raw`` text; without a kind prefix guess email ('@') or phone (digits)."""
    text = _text(text)
    m = _PREFIX.fullmatch(text)
    if m:
        prefix, rest = m.group(1).lower(), m.group(2)
        if prefix in KINDS:
            return normalize(prefix, rest, default_region=default_region, fold_email=fold_email)
        if prefix not in ("mailto", "tel"):
            raise InvalidIdentifier(f"unknown identifier kind {m.group(1)!r}", m.group(1), text)
    if "@" in text:
        return normalize("email", text, fold_email=fold_email)
    visible = [c for c in text if not (_blank(c) or c in _PHONE_SEPARATORS or c in _PLUS_SIGNS)]
    digits = sum(c.isdecimal() for c in visible)
    if digits and digits * 2 > len(visible):
        return normalize("phone", text, default_region=default_region)
    raise InvalidIdentifier("cannot tell the identifier kind: add a 'kind:' prefix", None, text)


def _printable(s: str) -> str:
    return s if s.isprintable() else ""


def mask(identifier: str) -> str:
    """Shorten an identifier for logs so it never shows the whole value; never raises."""
    kind, sep, value = identifier.partition(":") if isinstance(identifier, str) else ("", "", "")
    if not sep or kind not in KINDS:
        return "***"
    if kind == "phone":
        head = min(6, max(1, len(value) - 7))
        tail = value[-2:] if len(value) > 8 else ""
        return f"phone:{_printable(value[:head])}***{_printable(tail)}"
    if kind == "email" and "@" in value:
        local, _, domain = value.rpartition("@")
        first = local[:1] if len(local) > 1 else ""
        return f"email:{_printable(first)}***@{_printable(domain) or '***'}"
    return f"{kind}:{_printable(value[: min(2, len(value) // 2)])}***"

"""Table-driven and property tests for unify.identifiers."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unify.identifiers import (
    KINDS,
    InvalidIdentifier,
    mask,
    normalize,
    normalize_email,
    normalize_phone,
    parse_identifier,
)

MOBILE = "+989121234567"
RLM, LRM, NBSP, ZWNJ = "\u200f", "\u200e", "\u00a0", "\u200c"

# --- phone: one number, every way people write it ----------------------------------------------

SAME_MOBILE = [
    "09121234567",
    "۰۹۱۲۱۲۳۴۵۶۷",  # Persian digits
    "٠٩١٢١٢٣٤٥٦٧",  # Arabic-Indic digits
    "٠٩١٢۱۲۳۴۵۶۷",  # Arabic-Indic and Persian mixed
    "09۱۲-123 45 67",  # ASCII and Persian mixed
    "۰۹۱۲ ۱۲۳ ۴۵۶۷",
    "+98 912 123 4567",
    "+۹۸ ۹۱۲ ۱۲۳ ۴۵۶۷",
    "+989121234567",
    "0098 912 123 4567",
    "00989121234567",
    "۰۰۹۸۹۱۲۱۲۳۴۵۶۷",
    "00 98 912 123 4567",
    "98 912 123 4567",
    "989121234567",
    "9121234567",
    "912 123 4567",
    "(0912) 123-4567",
    "0912.123.4567",
    "0912-123-4567",
    "+98 (912) 123-45-67",
    "+98 0912 123 4567",  # redundant trunk 0 after the country code
    "0912‐123–45—67",  # U+2010 hyphen, U+2013 en dash, U+2014 em dash
    "0912\u2011123\u22124567",  # non-breaking hyphen, minus sign
    f"{RLM}09121234567{RLM}",
    f"{LRM}+98{NBSP}912{NBSP}123{NBSP}4567{LRM}",
    f"0912{ZWNJ}123{ZWNJ}4567",
    f"{RLM}+98\u202f912\u2009123\u20074567",  # narrow NBSP, thin space, figure space
    "\u202b0912 123 4567\u202c",  # RLE ... PDF
    "\u2067+98 912 123 4567\u2069",  # RLI ... PDI
    "\ufeff09121234567",  # BOM
    "\t 09121234567 \n",
    "＋98 912 123 4567",  # fullwidth plus
    "０９１２１２３４５６７",  # fullwidth digits
    "tel:+98-912-123-4567",
    "TEL:09121234567",
]


@pytest.mark.parametrize("raw", SAME_MOBILE)
def test_every_written_form_of_one_mobile_gives_one_e164(raw: str) -> None:
    assert normalize_phone(raw) == MOBILE
    assert normalize("phone", raw) == f"phone:{MOBILE}"
    assert normalize("phone", raw, default_region="IR") == f"phone:{MOBILE}"


def test_persian_digits_with_spaces_keep_every_digit() -> None:
    assert normalize_phone("۰۹۱۲ ۳۴۵ ۶۷۸۹") == "+989123456789"


@pytest.mark.parametrize(
    "raw",
    [
        "021 8888 7777",
        "02188887777",
        "(021) 8888-7777",
        "۰۲۱-۸۸۸۸۷۷۷۷",
        "+98 21 8888 7777",
        "0098 21 8888 7777",
        "98 21 8888 7777",
        "2188887777",
    ],
)
def test_tehran_landline(raw: str) -> None:
    assert normalize_phone(raw) == "+982188887777"


def test_other_iranian_landline() -> None:
    assert normalize_phone("031 3222 3333") == "+983132223333"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+1 650 253 0000", "+16502530000"),
        ("+1 (650) 253-0000", "+16502530000"),
        ("001 650 253 0000", "+16502530000"),
        ("+44 20 7031 3000", "+442070313000"),
        ("0044 20 7031 3000", "+442070313000"),
        ("0049 30 123456", "+4930123456"),
        ("004930123456", "+4930123456"),
        ("+49 (0)30 123456", "+4930123456"),
        ("+33 6 12 34 56 78", "+33612345678"),
    ],
)
def test_foreign_numbers_with_region_ir(raw: str, expected: str) -> None:
    assert normalize_phone(raw, "IR") == expected


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("6502530000", "US", "+16502530000"),
        ("(650) 253-0000", "US", "+16502530000"),
        ("011 49 30 123456", "US", "+4930123456"),  # the US international prefix
        ("0049 30 123456", "US", "+4930123456"),  # '00' still understood
        ("030 123456", "DE", "+4930123456"),
        ("030 123456", "de", "+4930123456"),  # region is case-insensitive
        ("020 7031 3000", "GB", "+442070313000"),
        ("06 12 34 56 78", "FR", "+33612345678"),
        ("+98 912 123 4567", "US", MOBILE),
        ("0098 912 123 4567", "DE", MOBILE),
    ],
)
def test_other_default_regions(raw: str, region: str, expected: str) -> None:
    assert normalize_phone(raw, region) == expected
    assert normalize("phone", raw, default_region=region) == f"phone:{expected}"


IR_ = "not a valid phone number for region IR: "
US_ = "not a valid phone number for region US: "
INTL = "not a valid phone number: "  # written with '+': the region played no part
LETTERS = "contains letters or symbols"
PLUS = "'+' is only allowed at the start"


@pytest.mark.parametrize(
    ("raw", "region", "reason"),
    [
        ("", "IR", IR_ + "empty"),
        ("   ", "IR", IR_ + "empty"),
        (f"{RLM}{NBSP}", "IR", IR_ + "empty"),
        ("()-.", "IR", IR_ + "empty"),
        ("+", "IR", INTL + "empty"),
        ("12", "IR", IR_ + "too short"),
        ("0912", "IR", IR_ + "too short"),
        ("0000", "IR", IR_ + "too short"),
        ("0098", "IR", IR_ + "too short"),
        ("+98 912", "IR", INTL + "too short"),
        ("+98 21 888", "IR", INTL + "too short"),
        ("+1 650 253 000", "IR", INTL + "too short"),
        ("0912 123 4567 8", "IR", IR_ + "too long"),
        ("1234567890123456789", "IR", IR_ + "too long"),
        ("+98 912 123 45678", "IR", INTL + "too long"),
        ("09121234567", "US", US_ + "too long"),
        ("989121234567", "US", US_ + "too long"),
        ("+999 123 4567", "IR", INTL + "unknown country code"),
        ("+1 999 253 0000", "IR", INTL + "not an assigned number range"),
        ("abc", "IR", IR_ + LETTERS),
        ("1-800-FLOWERS", "US", US_ + LETTERS),
        ("0912 123 4567 ext 12", "IR", IR_ + LETTERS),
        ("09121234567#", "IR", IR_ + LETTERS),
        ("0912/123/4567", "IR", IR_ + LETTERS),
        ("0912_123_4567", "IR", IR_ + LETTERS),
        ("ali@example.com", "IR", IR_ + LETTERS),
        ("²³", "IR", IR_ + LETTERS),
        ("98+9121234567", "IR", IR_ + PLUS),
        ("++989121234567", "IR", IR_ + PLUS),
    ],
)
def test_invalid_phone_reasons(raw: str, region: str, reason: str) -> None:
    with pytest.raises(InvalidIdentifier) as info:
        normalize_phone(raw, region)
    assert info.value.reason == reason
    assert str(info.value) == reason
    assert info.value.kind == "phone"
    assert info.value.raw == raw
    with pytest.raises(InvalidIdentifier, match=r"^not a valid phone number"):
        normalize("phone", raw, default_region=region)


@pytest.mark.parametrize("region", ["XX", "", "Iran", "001"])
def test_unknown_default_region_is_a_caller_bug_not_bad_data(region: str) -> None:
    with pytest.raises(ValueError, match="unknown default_region") as info:
        normalize_phone("09121234567", region)
    assert not isinstance(info.value, InvalidIdentifier)


def test_phone_reason_does_not_repeat_the_number() -> None:
    with pytest.raises(InvalidIdentifier) as info:
        normalize_phone("0912 123 4567 8")
    assert "0912" not in info.value.reason


# --- email -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "plain", "folded"),
    [
        ("ali@example.com", "ali@example.com", "ali@example.com"),
        ("Ali@Example.COM", "ali@example.com", "ali@example.com"),
        ("  ALI@example.com \n", "ali@example.com", "ali@example.com"),
        (f"{RLM}ali@example.com{NBSP}", "ali@example.com", "ali@example.com"),
        ("<Ali@Example.com>", "ali@example.com", "ali@example.com"),
        (" < ali@example.com > ", "ali@example.com", "ali@example.com"),
        ("mailto:Ali@Example.com", "ali@example.com", "ali@example.com"),
        ("MAILTO:ali@example.com", "ali@example.com", "ali@example.com"),
        ("<mailto:ali@example.com>", "ali@example.com", "ali@example.com"),
        ("Ali@Bücher.Example", "ali@xn--bcher-kva.example", "ali@xn--bcher-kva.example"),
        ("ali@XN--BCHER-KVA.example", "ali@xn--bcher-kva.example", "ali@xn--bcher-kva.example"),
        ("ÄLI@München.de", "äli@xn--mnchen-3ya.de", "äli@xn--mnchen-3ya.de"),
        ("Алиса@Пример.рф", "алиса@xn--e1afmkfd.xn--p1ai", "алиса@xn--e1afmkfd.xn--p1ai"),
        ("علی@example.com", "علی@example.com", "علی@example.com"),
        ("a@faßa.de", "a@xn--faa-6ka.de", "a@xn--faa-6ka.de"),
        ("Ali.Reza@Gmail.com", "ali.reza@gmail.com", "alireza@gmail.com"),
        ("ali.reza+news@GoogleMail.com", "ali.reza+news@googlemail.com", "alireza@gmail.com"),
        ("a.l.i+x+y@gmail.com", "a.l.i+x+y@gmail.com", "ali@gmail.com"),
        ("a.+x@gmail.com", "a.+x@gmail.com", "a@gmail.com"),
        ("+x@gmail.com", "+x@gmail.com", "+x@gmail.com"),  # nothing left before '+': kept
        ("Ali.Reza+Shop@Yahoo.com", "ali.reza+shop@yahoo.com", "ali.reza@yahoo.com"),
        ("ali+@example.com", "ali+@example.com", "ali@example.com"),
        ("a.+x@example.com", "a.+x@example.com", "a.+x@example.com"),  # 'a.' is not an address
        ("ali.reza@gmail.com.au", "ali.reza@gmail.com.au", "ali.reza@gmail.com.au"),
        ("o'brien@example.ie", "o'brien@example.ie", "o'brien@example.ie"),
    ],
)
def test_email(raw: str, plain: str, folded: str) -> None:
    assert normalize_email(raw) == plain
    assert normalize_email(raw, fold=False) == plain
    assert normalize_email(raw, fold=True) == folded
    assert normalize("email", raw) == f"email:{plain}"
    assert normalize("email", raw, fold_email=True) == f"email:{folded}"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "^not a valid email address: missing '@'$"),
        ("ali", "^not a valid email address: missing '@'$"),
        ("mailto:", "^not a valid email address: missing '@'$"),
        ("ali.example.com", "^not a valid email address: missing '@'$"),
        ("@example.com", "^not a valid email address: .*before the @-sign"),
        ("ali@", "^not a valid email address: .*after the @-sign"),
        ("ali@example", "^not a valid email address: .*period"),
        ("ali@localhost", "^not a valid email address: .*period"),
        ("ali@x.test", "^not a valid email address: .*special-use or reserved"),
        ("ali reza@example.com", "^not a valid email address: .*SPACE"),
        ("ali@exa mple.com", "^not a valid email address: "),
        ("ali@@example.com", "^not a valid email address: "),
        ("a..b@example.com", "^not a valid email address: .*two periods"),
        (".ali@example.com", "^not a valid email address: .*period"),
        ("ali@example.com.", "^not a valid email address: .*period"),
        ("ali@exa_mple.com", "^not a valid email address: .*invalid characters"),
        ("<ali@example.com", "^not a valid email address: "),
        ('"ali reza"@example.com', "^not a valid email address: .*[Qq]uot"),
        ("ali@[192.0.2.1]", "^not a valid email address: "),
        (f"ali{ZWNJ}@example.com", "^not a valid email address: .*unsafe"),
        ("ali\ud800@example.com", "^not a valid email address: .*unsafe"),
        ("Ali Rezaei <ali@example.com>", "^not a valid email address: "),
        ("a" * 64 + "@" + ("b" * 60 + ".") * 4 + "com", "^not a valid email address: .*too long"),
        ("a@" + "b" * 64 + ".com", "^not a valid email address: .*too many"),
    ],
)
def test_invalid_email(raw: str, reason: str) -> None:
    with pytest.raises(InvalidIdentifier, match=reason) as info:
        normalize_email(raw)
    assert info.value.kind == "email"
    assert info.value.raw == raw
    with pytest.raises(InvalidIdentifier, match=reason):
        normalize_email(raw, fold=True)


# --- telegram, webchat, api --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("123456789", "123456789"),
        ("  123456789\n", "123456789"),
        ("۱۲۳۴۵۶۷۸۹", "123456789"),
        ("١٢٣٤٥٦٧٨٩", "123456789"),
        ("12۳۴٥6789", "123456789"),
        (f"{RLM}123{LRM}", "123"),
        ("+42", "42"),
        ("007", "7"),
        ("1", "1"),
        ("9223372036854775807", "9223372036854775807"),
    ],
)
def test_telegram(raw: str, expected: str) -> None:
    assert normalize("telegram", raw) == f"telegram:{expected}"


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("", "must be a decimal number"),
        ("   ", "must be a decimal number"),
        ("abc", "must be a decimal number"),
        ("@ali", "must be a decimal number"),
        ("12a", "must be a decimal number"),
        ("1 234", "must be a decimal number"),
        ("1_234", "must be a decimal number"),
        ("1.0", "must be a decimal number"),
        ("1e5", "must be a decimal number"),
        ("++1", "must be a decimal number"),
        ("²", "must be a decimal number"),
        ("0", "must be positive, got zero"),
        ("000", "must be positive, got zero"),
        ("۰", "must be positive, got zero"),
        ("+0", "must be positive, got zero"),
        ("-1", "negative ids are groups or channels"),
        ("-1001234567890", "negative ids are groups or channels"),
        ("\u22125", "negative ids are groups or channels"),
        ("9223372036854775808", "too large"),
        ("1" * 25, "too large"),
        ("9" * 5000, "too large"),
    ],
)
def test_invalid_telegram(raw: str, why: str) -> None:
    with pytest.raises(InvalidIdentifier) as info:
        normalize("telegram", raw)
    assert info.value.reason == f"not a Telegram user id: {why}"
    assert (info.value.kind, info.value.raw) == ("telegram", raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("abc-DEF_123", "abc-DEF_123"),
        ("  v_1  ", "v_1"),
        ("x", "x"),
        ("-", "-"),
        ("a" * 128, "a" * 128),
        ("550e8400-e29b-41d4-a716-446655440000", "550e8400-e29b-41d4-a716-446655440000"),
    ],
)
def test_webchat(raw: str, expected: str) -> None:
    assert normalize("webchat", raw) == f"webchat:{expected}"


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("", "empty"),
        (" \t ", "empty"),
        ("a" * 129, "longer than 128 characters"),
        ("a b", "only A-Z a-z 0-9 _ - allowed"),
        ("a.b", "only A-Z a-z 0-9 _ - allowed"),
        ("ü", "only A-Z a-z 0-9 _ - allowed"),
        ("۱۲۳", "only A-Z a-z 0-9 _ - allowed"),
        ("a\nb", "only A-Z a-z 0-9 _ - allowed"),
        ("a:b", "only A-Z a-z 0-9 _ - allowed"),
    ],
)
def test_invalid_webchat(raw: str, why: str) -> None:
    with pytest.raises(InvalidIdentifier) as info:
        normalize("webchat", raw)
    assert info.value.reason == f"not a webchat visitor id: {why}"
    assert (info.value.kind, info.value.raw) == ("webchat", raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Cust-42", "Cust-42"),
        ("  CRM/ID:0042  ", "CRM/ID:0042"),
        ("Ali Rezaei", "Ali Rezaei"),  # free text is allowed, case kept
        ("علی#۱", "علی#۱"),  # digits are not converted in an opaque id
        ("x" * 256, "x" * 256),
        (" " + "x" * 256 + " ", "x" * 256),
    ],
)
def test_api(raw: str, expected: str) -> None:
    assert normalize("api", raw) == f"api:{expected}"


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("", "empty"),
        (f" {RLM} ", "empty"),
        ("x" * 257, "longer than 256 characters"),
        ("a\x00b", "contains control characters"),
        ("a\nb", "contains control characters"),
        ("a\tb", "contains control characters"),
        ("a\x7fb", "contains control characters"),
        ("a\x85b", "contains control characters"),
        ("a\u2028b", "contains control characters"),
        ("a\ud800b", "contains control characters"),
    ],
)
def test_invalid_api(raw: str, why: str) -> None:
    with pytest.raises(InvalidIdentifier) as info:
        normalize("api", raw)
    assert info.value.reason == f"not an API external id: {why}"
    assert (info.value.kind, info.value.raw) == ("api", raw)


# --- kinds, the exception ----------------------------------------------------------------------


def test_kinds() -> None:
    assert frozenset({"phone", "email", "telegram", "webchat", "api"}) == KINDS
    assert isinstance(KINDS, frozenset)


@pytest.mark.parametrize(
    ("kind", "raw", "expected"),
    [
        ("PHONE", "09121234567", f"phone:{MOBILE}"),
        (" Email ", "ali@example.com", "email:ali@example.com"),
        ("Telegram", "1", "telegram:1"),
    ],
)
def test_kind_is_case_and_space_insensitive(kind: str, raw: str, expected: str) -> None:
    assert normalize(kind, raw) == expected


@pytest.mark.parametrize("kind", ["name", "", "sms", "whatsapp", "tel", "mailto", "phone:"])
def test_unknown_kind(kind: str) -> None:
    with pytest.raises(InvalidIdentifier) as info:
        normalize(kind, "Ali")
    assert str(info.value) == f"unknown identifier kind {kind!r}"
    assert (info.value.kind, info.value.raw) == (kind, "Ali")


def test_names_are_never_identifiers() -> None:
    with pytest.raises(InvalidIdentifier, match=r"^unknown identifier kind 'name'$"):
        normalize("name", "Ali Rezaei")


def test_invalid_identifier_is_a_value_error_and_pickles() -> None:
    exc = InvalidIdentifier("too short", "phone", "0912")
    assert isinstance(exc, ValueError)
    assert (str(exc), exc.reason, exc.kind, exc.raw) == ("too short", "too short", "phone", "0912")
    back = pickle.loads(pickle.dumps(exc))
    assert (type(back), back.reason, back.kind, back.raw) == (
        InvalidIdentifier,
        "too short",
        "phone",
        "0912",
    )
    bare = InvalidIdentifier("unknown identifier kind 'name'")
    assert (bare.kind, bare.raw) == (None, None)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_non_string_raw_is_a_type_error(kind: str) -> None:
    with pytest.raises(TypeError, match="must be str, not int"):
        normalize(kind, 123)  # type: ignore[arg-type]


# --- parse_identifier --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("phone:۰۹۱۲۱۲۳۴۵۶۷", f"phone:{MOBILE}"),
        ("phone: +98 912 123 4567", f"phone:{MOBILE}"),
        ("Phone : 09121234567", f"phone:{MOBILE}"),
        (f"phone:{MOBILE}", f"phone:{MOBILE}"),
        ("email:Ali@X.com", "email:ali@x.com"),
        ("EMAIL: <Ali@Bücher.Example>", "email:ali@xn--bcher-kva.example"),
        ("telegram:123", "telegram:123"),
        ("telegram: ۱۲۳ ", "telegram:123"),
        ("webchat:v_1", "webchat:v_1"),
        ("api:crm:42", "api:crm:42"),  # only the first ':' separates the kind
        ("api: Cust 42 ", "api:Cust 42"),
        # no prefix: guessed
        ("09121234567", f"phone:{MOBILE}"),
        ("۰۹۱۲ ۱۲۳ ۴۵۶۷", f"phone:{MOBILE}"),
        ("+98 (912) 123-4567", f"phone:{MOBILE}"),
        (f"{RLM}+1 650 253 0000", "phone:+16502530000"),
        ("tel:+98-912-123-4567", f"phone:{MOBILE}"),
        ("021 8888 7777", "phone:+982188887777"),
        ("Ali@Example.com", "email:ali@example.com"),
        ("  <ali@example.com>  ", "email:ali@example.com"),
        ("mailto:Ali@Example.com", "email:ali@example.com"),
    ],
)
def test_parse_identifier(text: str, expected: str) -> None:
    assert parse_identifier(text) == expected


def test_parse_identifier_passes_region_and_fold() -> None:
    assert parse_identifier("6502530000", default_region="US") == "phone:+16502530000"
    assert parse_identifier("phone:030 123456", default_region="DE") == "phone:+4930123456"
    assert parse_identifier("A.B+x@googlemail.com") == "email:a.b+x@googlemail.com"
    assert parse_identifier("A.B+x@googlemail.com", fold_email=True) == "email:ab@gmail.com"
    assert parse_identifier("email:A.B+x@gmail.com", fold_email=True) == "email:ab@gmail.com"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("name:Ali", "unknown identifier kind 'name'"),
        ("Name: Ali Rezaei", "unknown identifier kind 'Name'"),
        ("whatsapp:+989121234567", "unknown identifier kind 'whatsapp'"),
        ("x:ali@example.com", "unknown identifier kind 'x'"),
        ("Ali Rezaei", "cannot tell the identifier kind: add a 'kind:' prefix"),
        ("", "cannot tell the identifier kind: add a 'kind:' prefix"),
        ("   ", "cannot tell the identifier kind: add a 'kind:' prefix"),
        ("ab12", "cannot tell the identifier kind: add a 'kind:' prefix"),
        ("v_123abc", "cannot tell the identifier kind: add a 'kind:' prefix"),
        ("12345abc", "not a valid phone number for region IR: contains letters or symbols"),
        ("0912", "not a valid phone number for region IR: too short"),
        ("ali@", "not a valid email address: There must be something after the @-sign."),
        ("phone:abc", "not a valid phone number for region IR: contains letters or symbols"),
        ("telegram:-5", "not a Telegram user id: negative ids are groups or channels"),
        ("webchat:", "not a webchat visitor id: empty"),
        ("api:", "not an API external id: empty"),
        ("email:ali", "not a valid email address: missing '@'"),
    ],
)
def test_parse_identifier_invalid(text: str, reason: str) -> None:
    with pytest.raises(InvalidIdentifier) as info:
        parse_identifier(text)
    assert info.value.reason == reason


def test_bare_digits_are_a_phone_never_a_telegram_id() -> None:
    with pytest.raises(InvalidIdentifier, match="phone number"):
        parse_identifier("123456789")
    assert parse_identifier("telegram:123456789") == "telegram:123456789"


# --- mask --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("identifier", "masked"),
    [
        ("phone:+989121234567", "phone:+98912***67"),
        ("phone:+16502530000", "phone:+1650***00"),
        ("phone:+4930123456", "phone:+493***56"),
        ("email:ali@example.com", "email:a***@example.com"),
        ("email:a@example.com", "email:***@example.com"),
        ("email:алиса@xn--e1afmkfd.xn--p1ai", "email:а***@xn--e1afmkfd.xn--p1ai"),
        ("telegram:123456789", "telegram:12***"),
        ("telegram:7", "telegram:***"),
        ("telegram:42", "telegram:4***"),
        ("webchat:abc-DEF_123", "webchat:ab***"),
        ("api:Cust-42", "api:Cu***"),
        ("api:Ali Rezaei", "api:Al***"),
        # not a normalised identifier: nothing of it is shown
        ("name:Ali", "***"),
        ("09121234567", "***"),
        ("", "***"),
        ("Phone:+989121234567", "***"),
        ("phone:", "phone:***"),
        ("email:@", "email:***@***"),
        ("email:nodomain", "email:no***"),
        ("api:\nxx", "api:***"),
        ("email:ali@evil\ninjected", "email:a***@***"),
    ],
)
def test_mask(identifier: str, masked: str) -> None:
    assert mask(identifier) == masked


@pytest.mark.parametrize(
    "identifier",
    [
        normalize("phone", "09121234567"),
        normalize("phone", "+44 20 7031 3000"),
        normalize("email", "Ali.Reza@Example.com"),
        normalize("telegram", "123456789"),
        normalize("webchat", "visitor-1"),
        normalize("api", "Cust-42"),
    ],
)
def test_mask_hides_part_of_every_value(identifier: str) -> None:
    kind, value = identifier.split(":", 1)
    masked = mask(identifier)
    assert masked.startswith(f"{kind}:") and "***" in masked
    assert value not in masked


# --- properties --------------------------------------------------------------------------------

PHONEISH = st.sampled_from(
    [
        *"0123456789۰۱۲۳۴۵۶۷۸۹٠١٢٣٤٥٦٧٨٩+＋-‐–—−.() @aZß:\x00\n\ud800",
        *(NBSP, ZWNJ, RLM, LRM, "\u202b", "\ufeff", "00", "98", "0098", "tel:", "mailto:"),
    ]
)
ANY_TEXT = st.one_of(st.text(), st.lists(PHONEISH, max_size=40).map("".join))
KIND = st.sampled_from([*sorted(KINDS), "name", "PHONE", ""])
REGION = st.sampled_from(["IR", "US", "DE", "GB"])
FAST = settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))


@FAST
@given(kind=KIND, raw=ANY_TEXT, region=REGION, fold=st.booleans())
def test_any_text_gives_a_normalised_str_or_invalid_identifier(
    kind: str, raw: str, region: str, fold: bool
) -> None:
    try:
        result = normalize(kind, raw, default_region=region, fold_email=fold)
    except InvalidIdentifier as exc:
        assert exc.reason and str(exc) == exc.reason
        return
    k = kind.strip().lower()
    assert result.startswith(f"{k}:") and k in KINDS
    result.encode("utf-8")  # storable: no lone surrogates
    value = result.split(":", 1)[1]
    # normalising again changes nothing
    assert normalize(k, value, default_region=region, fold_email=fold) == result
    assert parse_identifier(result, default_region=region, fold_email=fold) == result
    assert value not in mask(result)[len(k) + 1 :] or (k == "api" and "*" in value)


@FAST
@given(text=ANY_TEXT, region=REGION)
def test_parse_identifier_any_text(text: str, region: str) -> None:
    try:
        result = parse_identifier(text, default_region=region)
    except InvalidIdentifier:
        return
    assert result.split(":", 1)[0] in KINDS


@FAST
@given(text=st.text())
def test_mask_never_raises_and_never_returns_the_input(text: str) -> None:
    masked = mask(text)
    assert "***" in masked
    assert masked != text or text.count("*") >= 3


SEPARATOR = st.sampled_from(["", "", "", " ", "-", ".", NBSP, ZWNJ, RLM, LRM, "–", "—"])
DIGIT_SCRIPT = st.sampled_from(["0123456789", "۰۱۲۳۴۵۶۷۸۹", "٠١٢٣٤٥٦٧٨٩"])


@FAST
@given(
    subscriber=st.integers(min_value=0, max_value=9_999_999),
    prefix=st.sampled_from(["0", "+98", "0098", "98", ""]),
    scripts=st.lists(DIGIT_SCRIPT, min_size=11, max_size=11),
    seps=st.lists(SEPARATOR, min_size=11, max_size=11),
)
def test_any_spelling_of_an_iranian_mobile_is_one_e164(
    subscriber: int, prefix: str, scripts: list[str], seps: list[str]
) -> None:
    national = f"912{subscriber:07d}"
    spelled = "".join(
        script[int(d)] + sep for d, script, sep in zip(national, scripts, seps, strict=False)
    )
    assert normalize_phone(prefix + spelled) == f"+98{national}"


# --- remembered normal forms ---------------------------------------------------------------------


def test_a_repeated_identifier_is_parsed_once_and_a_bad_one_fails_every_time() -> None:
    from unify import identifiers

    identifiers._normalize_cached.cache_clear()
    for _ in range(3):
        assert normalize("phone", "۰۹۱۲ ۱۲۳ ۴۵۶۷") == f"phone:{MOBILE}"
        # the region is part of what is remembered: the same digits are German in DE
        assert normalize("phone", "۰۹۱۲ ۱۲۳ ۴۵۶۷", default_region="DE") == "phone:+499121234567"
    info = identifiers._normalize_cached.cache_info()
    assert (info.misses, info.hits) == (2, 4)  # one parse per (value, region)
    for _ in range(2):
        with pytest.raises(InvalidIdentifier, match="too short"):
            normalize("phone", "0912")
    # a value that is not a string is a caller's bug, named as before (never "unhashable")
    with pytest.raises(TypeError, match="identifier must be str"):
        normalize("phone", ["0912"])  # type: ignore[arg-type]

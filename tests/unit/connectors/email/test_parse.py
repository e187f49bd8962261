"""RFC 5322/MIME → Message, on .eml fixtures written to the RFCs, including ugly ones."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import pytest

from connectors.email import text as tx
from connectors.email.parse import ParsedMail, Unparseable, fingerprint, parse_mail
from pipeline.contract import Message, message_event, parse_event

FIXTURES = Path(__file__).parent / "fixtures"
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
INBOX = "Support@Omnihub.localhost"


def parse(name: str, **kw: object) -> ParsedMail:
    return parse_mail((FIXTURES / name).read_bytes(), account=INBOX, received_at=NOW, **kw)  # type: ignore[arg-type]


def msg(name: str, **kw: object) -> Message:
    return parse(name, **kw).message


def test_a_reply_is_threaded_and_its_new_text_separated_from_the_quote() -> None:
    m = msg("plain_reply.eml")
    assert (m.channel, m.direction, m.account) == ("email", "in", "support@omnihub.localhost")
    assert m.source_id == "CAF=reply-2@mail.example.com"
    assert m.thread == "CAF=root-1@mail.example.com"  # first of References
    assert m.in_reply_to == "20260301.abc@omnihub.localhost"
    assert m.references == ["CAF=root-1@mail.example.com", "20260301.abc@omnihub.localhost"]
    assert [(s.kind, s.value, s.assurance) for s in m.sender] == [
        ("email", "Ali@Example.com", "channel")
    ]
    assert m.display_name == "Ali Rezaei"
    assert m.text == "Thanks, but the tracking link does not work. Can you check again?\n— Ali"
    assert m.quoted_text is not None and m.quoted_text.startswith("On Sun, 1 Mar 2026")
    assert "> your order left our warehouse today." in m.quoted_text
    assert m.occurred_at == datetime(2026, 3, 2, 6, 45, tzinfo=UTC)
    assert m.kind == "message"


def test_persian_multipart_with_encoded_words_rfc2231_filename_and_inline_image() -> None:
    parsed = parse("persian_multipart.eml")
    m = parsed.message
    assert m.subject == "سلام، سفارش من کجاست؟ #1234"
    assert m.display_name == "علی رضایی"
    assert m.text == "متن پیام: سفارش شماره ۱۲۳۴ هنوز نرسیده.\nPlain text part."
    assert (
        m.html is not None and "<b>۱۲۳۴</b>" in m.html and 'src="cid:logo-1@example.ir"' in m.html
    )
    names = [a.name for a in m.attachments]
    assert "فاکتور ۱۲۳۴.pdf" in names
    pdf = next(a for a in m.attachments if a.name.endswith(".pdf"))
    assert pdf.type == "application/pdf" and pdf.size == 9 + 256 * 8
    assert pdf.ref == pdf.sha256 and pdf.omitted is None
    assert hashlib.sha256(parsed.blobs[pdf.sha256]).hexdigest() == pdf.sha256
    inline = next(a for a in m.attachments if a.type == "image/png")
    assert inline.sha256 in parsed.blobs
    assert not parsed.keep_raw


@pytest.mark.parametrize(
    ("name", "subject", "text_start"),
    [
        ("windows1256.eml", "سلام، لطفاً سفارش من را پيگيري كنيد. شكراً", "سلام، لطفاً سفارش"),
        ("eightbit_no_charset.eml", "پيگيري سفارش", "سلام، سفارش من هنوز"),
        ("mislabelled_latin1.eml", "Commande", "Où est ma commande ? Merci — Renée"),
        ("unknown_charset.eml", "Qapla’", "nuqneH — ‘café’ ✓"),
        ("smtputf8.eml", "سلام از یک آدرس یونیکد", "متن با آدرس یونیکد"),
        ("encoded_word_split.eml", "گزارش خرابی دستگاه شماره ۷", "body"),
    ],
)
def test_charsets_wrong_missing_or_unknown_still_read_correctly(
    name: str, subject: str, text_start: str
) -> None:
    m = msg(name)
    assert m.subject == subject
    assert m.text is not None and m.text.startswith(text_start)
    assert "\ufffd" not in m.text


def test_mislabelled_latin1_display_name_is_utf8() -> None:
    assert msg("mislabelled_latin1.eml").display_name == "Renée"


def test_an_smtputf8_sender_address_is_kept() -> None:
    m = msg("smtputf8.eml")
    assert m.sender[0].value == "علی@مثال.example" and m.display_name == "علی"


def test_html_only_mail_becomes_readable_text_and_sanitised_html() -> None:
    m = msg("html_only.eml")
    assert m.text == "Hello team,\n\nMy invoice is wrong: see this one."
    assert m.quoted_text is not None and "Your invoice is attached." in m.quoted_text
    assert m.html is not None
    for bad in ("<script", "alert(", "onclick", "javascript:", "<style", "color:red"):
        assert bad not in m.html
    assert 'href="https://example.com/i/77"' in m.html


def test_outlook_and_persian_quotes_are_separated() -> None:
    out = msg("outlook_reply.eml")
    assert out.text == "Yes, please renew for another year.\n\nMina"
    assert out.quoted_text is not None and "Shall we renew" in out.quoted_text
    fa = msg("persian_quoted_reply.eml")
    assert fa.text == "ممنون، دریافت کردم."
    assert fa.quoted_text is not None and fa.quoted_text.startswith("در تاریخ")


def test_interleaved_answers_are_not_cut_away() -> None:
    body = "On Mon, Ali wrote:\n> question one?\nanswer one\n> question two?\nanswer two\n"
    assert tx.split_quoted(body) == (body, None)


def test_a_mail_that_is_only_a_quote_keeps_its_text() -> None:
    body = "> only quoted\n> lines"
    assert tx.split_quoted(body) == (body, None)


def test_missing_message_id_gets_a_deterministic_content_id() -> None:
    raw = (FIXTURES / "no_message_id.eml").read_bytes()
    a = parse_mail(raw, account=INBOX, received_at=NOW).message
    # the same mail relayed again (one more Received header, LF line ends) is the same event
    again = b"Received: from relay2.example by mta.test; Mon, 2 Mar 2026\r\n" + raw
    b = parse_mail(again.replace(b"\r\n", b"\n"), account=INBOX, received_at=NOW).message
    assert a.source_id.startswith("sha256:") and len(a.source_id) == 7 + 64
    assert a.source_id == b.source_id and a.event_id == b.event_id
    assert a.thread == a.source_id
    assert a.occurred_at == NOW  # no Date: received time, timezone-aware
    other = parse_mail(raw.replace(b"old script", b"new script"), account=INBOX, received_at=NOW)
    assert other.message.source_id != a.source_id


def test_duplicate_message_ids_with_different_content_have_different_fingerprints() -> None:
    a, b = parse("duplicate_id_a.eml"), parse("duplicate_id_b.eml")
    assert a.message.source_id == b.message.source_id == "same-id@example.com"
    assert a.fingerprint != b.fingerprint  # the service tells them apart with this


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("auto_reply_vacation.eml", "auto_reply"),
        ("x_autoreply.eml", "auto_reply"),
        ("bounce_dsn.eml", "bounce"),
        ("loop_many_received.eml", "loop"),
        ("plain_reply.eml", "message"),
    ],
)
def test_auto_replies_bounces_and_loops_are_recognised(name: str, kind: str) -> None:
    assert msg(name).kind == kind


def test_mail_from_the_inbox_itself_is_a_loop() -> None:
    raw = b"From: Support@Shop.example.com\r\nMessage-ID: <x@y>\r\n\r\nhi\r\n"
    m = parse_mail(raw, account="support@shop.example.com", received_at=NOW).message
    assert m.kind == "loop"
    raw = b"From: a@example.com\r\nX-Loop: support@shop.example.com\r\n\r\nhi\r\n"
    assert (
        parse_mail(raw, account="support@shop.example.com", received_at=NOW).message.kind == "loop"
    )


def test_a_bounce_lands_on_the_failed_customer_in_the_original_thread() -> None:
    m = msg("bounce_dsn.eml")
    assert m.sender[0].value == "gone@customer.example"
    assert m.thread == "root-5@customer.example"
    assert m.in_reply_to == "reply-77.abc@omnihub.localhost"  # the mail that bounced
    assert m.text is not None and "could not" in m.text


def test_broken_headers_still_make_a_message_from_what_is_usable() -> None:
    m = msg("broken_headers.eml")
    assert m.sender[0].value == "real.sender@example.com"  # From is broken, Sender is not
    assert m.source_id == "broken-1@example.com"
    assert m.occurred_at == NOW
    assert m.text is not None and "body survives" in m.text


def test_no_sender_anywhere_is_unparseable_but_the_envelope_rescues_it() -> None:
    with pytest.raises(Unparseable, match="sender"):
        parse("no_sender.eml")
    m = msg("no_sender.eml", envelope_from="bounce-me@example.com")
    assert m.sender[0].value == "bounce-me@example.com"


def test_empty_body_nul_bytes_and_bad_base64_do_not_break_anything() -> None:
    empty = msg("empty_body.eml")
    assert empty.text is None and empty.subject is None
    nul = msg("nul_and_controls.eml")
    assert nul.text == "beforeafterbell" and nul.subject == "nul in subject"
    bad = msg("broken_base64.eml")
    assert bad.text == "see attached"
    (att,) = bad.attachments
    assert att.name == "data.bin"  # path components removed


def test_an_attached_message_is_an_attachment_not_the_body() -> None:
    m = msg("forwarded_rfc822.eml")
    assert m.text == "See the forwarded complaint below."
    assert [a.type for a in m.attachments] == ["message/rfc822"]
    assert m.attachments[0].name.endswith(".eml")


def _mail_with_attachment(size: int) -> bytes:
    em = EmailMessage(policy=SMTP)
    em["From"] = "big@example.com"
    em["To"] = "support@omnihub.localhost"
    em["Subject"] = "big"
    em["Message-ID"] = f"<big-{size}@example.com>"
    em.set_content("see attachment")
    em.add_attachment(b"\x01" * size, maintype="application", subtype="zip", filename="big.zip")
    return em.as_bytes()


def test_a_10mb_attachment_is_stored_and_one_over_the_limit_is_kept_in_the_raw_mail() -> None:
    raw = _mail_with_attachment(10 * 1024 * 1024)
    ok = parse_mail(raw, account=INBOX, received_at=NOW, max_attachment_bytes=20 << 20)
    (att,) = ok.message.attachments
    assert att.size == 10 * 1024 * 1024 and att.sha256 in ok.blobs and not ok.keep_raw
    over = parse_mail(raw, account=INBOX, received_at=NOW, max_attachment_bytes=1 << 20)
    (big,) = over.message.attachments
    assert big.omitted and "limit" in big.omitted
    assert big.ref == over.raw_sha256 and over.keep_raw and not over.blobs


def test_giant_lines_and_hundreds_of_attachments_are_capped_not_crashed() -> None:
    line = "x" * 3_000_000
    raw = f"From: g@example.com\r\nMessage-ID: <giant@x>\r\n\r\n{line}\r\n".encode()
    m = parse_mail(raw, account=INBOX, received_at=NOW).message
    assert m.text is not None and len(m.text) == 1_000_000
    em = EmailMessage(policy=SMTP)
    em["From"] = "many@example.com"
    em.set_content("many")
    for i in range(130):
        em.add_attachment(f"file {i}".encode(), maintype="text", subtype="csv", filename=f"{i}.csv")
    many = parse_mail(em.as_bytes(), account=INBOX, received_at=NOW)
    assert len(many.message.attachments) == 100 and many.keep_raw


def test_every_fixture_round_trips_through_the_event_contract() -> None:
    for path in sorted(FIXTURES.glob("*.eml")):
        try:
            parsed = parse_mail(path.read_bytes(), account=INBOX, received_at=NOW)
        except Unparseable:
            assert path.name == "no_sender.eml"
            continue
        event = message_event(parsed.message, source="/t")
        assert parse_event(event.to_json()).data == parsed.message, path.name


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\x01\x02",
        b"From:\r\n\r\n",
        b"From: a@b.c\r\nContent-Type: multipart/mixed; boundary=\r\n\r\n--\r\n--",
        b"From: a@b.c\r\nContent-Type: text/plain; charset=base64\r\n\r\n\xff\xfe",
        b"From: a@b.c\r\nContent-Type: text/plain; charset*=x''%ZZ\r\n\r\nhi",
        b"From: =?utf-8?B?" + base64.b64encode(b"\xff\xfe\xfd") + b"?= <a@b.c>\r\n\r\n",
        b"From: a@b.c\r\nDate: Mon, 99 Jan 99999 99:99:99 +9999\r\n\r\nx",
        b"From: a@b.c\r\nReferences: " + b"<r@x> " * 5000 + b"\r\n\r\nx",
        b"From: a@b.c\r\nMessage-ID: <" + b"m" * 2000 + b"@x>\r\n\r\nx",
    ],
)
def test_hostile_input_is_parsed_or_refused_never_crashes(raw: bytes) -> None:
    try:
        m = parse_mail(raw, account=INBOX, received_at=NOW).message
    except Unparseable:
        return
    assert len(m.references) <= 100 and len(m.source_id) <= 512 and len(m.thread) <= 512


def test_fingerprint_ignores_trace_headers_and_line_ends() -> None:
    a = b"From: a@b.c\r\nSubject: x\r\n\r\nbody\r\n"
    b = b"Received: from x\n\tby y\nReturn-Path: <a@b.c>\nFrom: a@b.c\nSubject: x\n\nbody\n"
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint(a.replace(b"body", b"other"))


def test_decode_bytes_never_raises_and_prefers_utf8_over_a_latin1_label() -> None:
    assert tx.decode_bytes("é".encode(), "iso-8859-1") == "é"
    assert tx.decode_bytes(b"\xe9t\xe9", "iso-8859-1") == "été"
    assert tx.decode_bytes(b"\xff\xfe\x00", "rot13") is not None
    assert tx.codec_for("base64") is None and tx.codec_for("windows-1256") == "cp1256"

"""Widget frames → Message: identities and their assurance, signed identity, limits, ids."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.webchat.parse import (
    FrameError,
    build_message,
    clean_filename,
    client_id_of,
    decode,
    history_item,
    parse_hello,
    parse_message,
    parse_profile,
    parse_typing,
    sniff,
    source_id,
    verify_identity,
)
from connectors.webchat.tokens import Signer, new_visitor_id
from pipeline.contract import message_event_id
from unify.identifiers import normalize

FRAMES: dict[str, Any] = json.loads(
    (Path(__file__).parent / "fixtures" / "frames.json").read_text(encoding="utf-8")
)
SECRET = b"shop-hmac-secret"
NOW = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
SIGNER = Signer(b"test-visitor-key-0123456789")
VISITOR = "V1StGXR8_Z5jdHi6B-myT"


def frame(name: str) -> dict[str, Any]:
    return decode(json.dumps(FRAMES[name]))


def message(name: str, **kw: Any) -> Any:
    out = parse_message(
        frame(name),
        max_text=kw.pop("max_text", 4000),
        inbox="shop",
        visitor_id=VISITOR,
        signer=SIGNER,
    )
    return build_message(
        inbox="shop", visitor_id=VISITOR, session="sAbCdEfGhIjKlMnO", outgoing=out, now=NOW, **kw
    )


# ---------------------------------------------------------------------------- frames
@pytest.mark.parametrize(
    ("raw", "code", "field"),
    [
        ("not json", "invalid_frame", None),
        ("[1, 2]", "invalid_frame", None),
        ('{"text": "no type"}', "invalid_field", "type"),
        ('{"type": "subscribe"}', "unknown_type", "type"),
        ('{"type": 7}', "invalid_field", "type"),
    ],
)
def test_bad_frames_are_named(raw: str, code: str, field: str | None) -> None:
    with pytest.raises(FrameError) as err:
        decode(raw)
    assert err.value.code == code and err.value.field == field


def test_hello_and_typing_frames() -> None:
    hello = parse_hello(frame("hello_signed_in"))
    assert hello.session == "sAbCdEfGhIjKlMnO" and hello.visitor is None
    assert hello.identity["user_id"] == "42"
    with pytest.raises(FrameError) as err:
        parse_hello({"type": "hello", "session": "../../etc"})
    assert err.value.field == "session"
    with pytest.raises(FrameError) as err:
        parse_hello({"type": "hello", "identity": "42"})
    assert err.value.field == "identity"
    assert parse_typing(frame("typing_start")) == "start"
    assert parse_typing(frame("typing_stop")) == "stop"
    with pytest.raises(FrameError) as err:
        parse_typing({"type": "typing", "state": "maybe"})
    assert err.value.field == "state"


# ---------------------------------------------------------------------------- identity
def test_a_visitor_alone_is_one_channel_identifier() -> None:
    m = message("message_persian")
    assert m.channel == "webchat" and m.direction == "in" and m.account == "shop"
    assert [(i.kind, i.value, i.assurance) for i in m.sender] == [("webchat", VISITOR, "channel")]
    assert m.thread == "sAbCdEfGhIjKlMnO" and m.text == "سلام، سفارشم کی می‌رسه؟"
    assert m.display_name is None and m.occurred_at == NOW
    assert normalize("webchat", VISITOR) == f"webchat:{VISITOR}"


def test_a_signed_identity_is_channel_assured() -> None:
    ident = verify_identity(frame("hello_signed_in")["identity"], SECRET)
    assert ident.user_id == "42" and ident.email == "Ali.Rezaei@Example.ir"
    assert ident.name == "علی رضایی"
    m = message("message_persian", identity=ident)
    assert [(i.kind, i.value, i.assurance) for i in m.sender] == [
        ("webchat", VISITOR, "channel"),
        ("api", "42", "channel"),
        ("email", "Ali.Rezaei@Example.ir", "channel"),
    ]
    assert m.display_name == "علی رضایی"
    # hex in upper case and an e-mail alone are fine; a number as user_id is its decimal form
    only = verify_identity(frame("hello_signed_email_only_upper_hex")["identity"], SECRET)
    assert [i.kind for i in only.identifiers] == ["email"]
    assert verify_identity(frame("hello_integer_user_id")["identity"], SECRET).user_id == "42"


@pytest.mark.parametrize(
    ("identity", "secret", "field"),
    [
        ("hello_forged", SECRET, "identity.hash"),  # someone else's user id, same hash
        ("hello_signed_in", b"another-inbox-secret", "identity.hash"),
        ("hello_signed_in", None, "identity"),  # the inbox has no secret: nothing to check
    ],
)
def test_a_forged_or_uncheckable_identity_is_refused(
    identity: str, secret: bytes | None, field: str
) -> None:
    with pytest.raises(FrameError) as err:
        verify_identity(frame(identity)["identity"], secret)
    assert err.value.code == "identity_invalid" and err.value.field == field


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"user_id": "42", "email": "a@b.ir"}, "identity.hash"),  # missing hash
        ({"user_id": "42", "hash": ""}, "identity.hash"),
        ({"hash": "ab"}, "identity.user_id"),  # nothing to sign
        ({"user_id": ["42"], "hash": "ab"}, "identity.user_id"),
        ({"email": "x" * 300, "hash": "ab"}, "identity.email"),
        ([], "identity"),
    ],
)
def test_malformed_identities_name_the_field(raw: Any, field: str) -> None:
    with pytest.raises(FrameError) as err:
        verify_identity(raw, SECRET)
    assert err.value.field == field


def test_a_correctly_signed_but_invalid_email_is_refused() -> None:
    from connectors.webchat.tokens import identity_hash

    raw = {"email": "not-an-email", "hash": identity_hash(SECRET, "", "not-an-email")}
    with pytest.raises(FrameError) as err:
        verify_identity(raw, SECRET)
    assert err.value.field == "identity.email"


def test_the_pre_chat_form_gives_claimed_identifiers_only() -> None:
    profile = parse_profile(frame("profile_persian_digits"))
    assert profile.name == "مریم احمدی"
    m = message("message_persian", profile=profile)
    assert [(i.kind, i.assurance) for i in m.sender] == [
        ("webchat", "channel"),
        ("email", "claimed"),
        ("phone", "claimed"),
    ]
    assert normalize("phone", m.sender[2].value) == "phone:+989123456789"
    assert m.display_name == "مریم احمدی"
    # signed identity and form together: the signed name wins, both kinds of identifier stay
    ident = verify_identity(frame("hello_signed_in")["identity"], SECRET)
    both = message("message_persian", identity=ident, profile=profile)
    assert both.display_name == "علی رضایی"
    assert [i.assurance for i in both.sender].count("claimed") == 2
    with pytest.raises(FrameError) as err:
        parse_profile(frame("profile_bad_phone"))
    assert err.value.field == "profile.phone"
    with pytest.raises(FrameError) as err:
        parse_profile({"email": "ali@"})
    assert err.value.field == "profile.email"
    with pytest.raises(FrameError) as err:
        parse_profile({"name": "x" * 200})
    assert err.value.field == "profile.name"


# ---------------------------------------------------------------------------- messages
def test_ids_are_deterministic_so_a_resend_is_the_same_event() -> None:
    a, b = message("message_persian"), message("message_persian")
    assert a.source_id == b.source_id == f"{VISITOR}/0f8fad5b-d9cb-469f-a165-70867728950e"
    assert a.event_id == b.event_id == message_event_id("webchat", "shop", a.source_id)
    # another visitor reusing the client id is another event
    other = build_message(
        inbox="shop",
        visitor_id="another-visitor-id-1234",
        session="sAbCdEfGhIjKlMnO",
        outgoing=parse_message(
            frame("message_persian"),
            max_text=4000,
            inbox="shop",
            visitor_id="another-visitor-id-1234",
            signer=SIGNER,
        ),
        now=NOW,
    )
    assert other.event_id != a.event_id
    assert client_id_of(VISITOR, a.source_id) == "0f8fad5b-d9cb-469f-a165-70867728950e"
    assert client_id_of("someone-else-entirely", a.source_id) is None
    assert source_id(VISITOR, "x") == f"{VISITOR}/x"


def test_control_characters_are_dropped_and_blanks_trimmed() -> None:
    assert message("message_controls").text == "hi there\nline 2\t!"


def test_size_limit_names_the_field() -> None:
    with pytest.raises(FrameError) as err:
        message("message_persian", max_text=10)
    assert err.value.code == "too_large" and err.value.field == "text"
    assert "10" in str(err.value)
    # exactly at the limit is fine (characters, not bytes: Persian is 2 bytes a letter)
    text = FRAMES["message_persian"]["text"]
    assert message("message_persian", max_text=len(text)).text == text


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"client_id": None}, "client_id"),
        ({"client_id": "short"}, "client_id"),
        ({"client_id": "has spaces in it"}, "client_id"),
        ({"text": ""}, "text"),
        ({"text": " \n "}, "text"),
        ({"text": 42}, "text"),
        ({"attachments": "nope"}, "attachments"),
        ({"attachments": [{}] * 11}, "attachments"),
        ({"attachments": [{"name": "x"}]}, "attachments.0"),
    ],
)
def test_bad_messages_name_the_field(change: dict[str, Any], field: str) -> None:
    bad = {**FRAMES["message_persian"], **change}
    with pytest.raises(FrameError) as err:
        parse_message(bad, max_text=4000, inbox="shop", visitor_id=VISITOR, signer=SIGNER)
    assert err.value.field == field


def receipt(visitor: str = VISITOR, **change: Any) -> dict[str, Any]:
    att = {"sha256": "a" * 64, "name": "رسید.png", "type": "image/png", "size": 2048}
    att["token"] = SIGNER.upload("shop", visitor, att["sha256"], att["name"], att["type"], 2048)
    return {**att, **change}


def test_attachments_need_a_receipt_of_this_visitors_upload() -> None:
    ok = {"type": "message", "client_id": "c-000000001", "attachments": [receipt()]}
    out = parse_message(ok, max_text=10, inbox="shop", visitor_id=VISITOR, signer=SIGNER)
    (att,) = out.attachments
    assert (att.name, att.type, att.size, att.ref) == ("رسید.png", "image/png", 2048, "a" * 64)
    assert out.text is None  # an image alone is a message
    for bad in (
        receipt(visitor="someone-else-entirely"),  # another visitor's receipt
        receipt(size=4096),  # size changed after signing
        receipt(type="application/pdf"),
        receipt(token="x" * 32),
    ):
        frame_ = {"type": "message", "client_id": "c-000000001", "attachments": [bad]}
        with pytest.raises(FrameError) as err:
            parse_message(frame_, max_text=10, inbox="shop", visitor_id=VISITOR, signer=SIGNER)
        assert err.value.field == "attachments.0.token"
    with pytest.raises(FrameError):  # the same receipt on another inbox
        parse_message(ok, max_text=10, inbox="other", visitor_id=VISITOR, signer=SIGNER)


# ---------------------------------------------------------------------------- tokens
def test_visitor_tokens_are_issued_by_the_server_and_bound_to_the_user() -> None:
    vid = new_visitor_id()
    assert normalize("webchat", vid) == f"webchat:{vid}" and len(vid) >= 22
    anon = SIGNER.visitor_token("shop", vid)
    assert SIGNER.check_visitor("shop", anon) == (vid, "")
    assert SIGNER.check_visitor("other", anon) is None  # another inbox
    assert Signer(b"another-key-0123456789").check_visitor("shop", anon) is None
    ali = SIGNER.binding("shop", "42\nali@example.ir")
    token = SIGNER.visitor_token("shop", vid, ali)
    assert SIGNER.check_visitor("shop", token) == (vid, ali)
    assert (
        ali != SIGNER.binding("shop", "43\nali@example.ir") and SIGNER.binding("shop", None) == ""
    )
    forged = [
        f"{new_visitor_id()}.{token.split('.', 1)[1]}",  # another visitor id, same signature
        token.replace(ali, ""),  # binding removed
        "a.b",
        "",
        "x" * 300,
        None,
        42,
    ]
    for bad in forged:
        assert SIGNER.check_visitor("shop", bad) is None, bad
    assert "test-visitor-key" not in repr(SIGNER)
    with pytest.raises(ValueError):
        Signer(b"short")


# ---------------------------------------------------------------------------- uploads
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40
ALLOWED = ["image/png", "image/jpeg", "image/webp", "application/pdf", "text/plain"]


@pytest.mark.parametrize(
    ("data", "declared", "expected"),
    [
        (PNG, "image/png", "image/png"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 20, "image/jpeg", "image/jpeg"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "image/webp", "image/webp"),
        (b"%PDF-1.7\n", "application/pdf; charset=binary", "application/pdf"),
        ("سلام\n".encode(), "text/plain", "text/plain"),
    ],
)
def test_uploads_are_typed_by_their_bytes(data: bytes, declared: str, expected: str) -> None:
    assert sniff(data, declared, ALLOWED) == expected


@pytest.mark.parametrize(
    ("data", "declared"),
    [
        (b"<svg onload=alert(1)>", "image/svg+xml"),  # not accepted at all
        (b"<html><script>", "image/png"),  # lies about its type
        (b"MZ\x90\x00", "application/pdf"),
        (b"\xff\xfe\x00\x00", "text/plain"),
        (PNG, ""),
    ],
)
def test_uploads_that_lie_or_are_not_accepted_are_refused(data: bytes, declared: str) -> None:
    with pytest.raises(FrameError) as err:
        sniff(data, declared, ALLOWED)
    assert err.value.field == "file" and err.value.code == "unsupported_type"


def test_file_names_are_made_safe() -> None:
    assert clean_filename("../../etc/passwd") == "passwd"
    assert clean_filename("C:\\Users\\ali\\رسید خرید.pdf") == "رسید خرید.pdf"
    assert clean_filename('a"b\r\n.png') == "a'b.png"
    assert clean_filename(".htaccess") == "htaccess"
    assert clean_filename(None) == clean_filename("") == "file"
    assert len(clean_filename("x" * 500)) == 200


# ---------------------------------------------------------------------------- history
def test_history_items_carry_the_client_id_and_signed_links_for_this_visitor_only() -> None:
    doc = {
        "_id": "evt-1",
        "direction": "in",
        "source_id": f"{VISITOR}/c-000000001",
        "text": "سلام",
        "occurred_at": NOW,
        "attachments": [receipt() | {"ref": "a" * 64}],
        "sender": [f"webchat:{VISITOR}", "email:ali@example.ir"],
        "customer_id": "cust-1",
    }
    item = history_item(doc, signer=SIGNER, inbox="shop", visitor_id=VISITOR)
    assert set(item) == {"id", "direction", "text", "attachments", "at", "client_id"}
    assert item["client_id"] == "c-000000001" and item["at"] == NOW.isoformat()
    (att,) = item["attachments"]
    assert att["url"].startswith("/files/" + "a" * 64 + "?")
    sig = att["url"].rsplit("s=", 1)[1]
    assert SIGNER.file_ok("shop", VISITOR, "a" * 64, "image/png", sig)
    assert not SIGNER.file_ok("shop", "someone-else-entirely", "a" * 64, "image/png", sig)
    reply = {
        "_id": "evt-2",
        "direction": "out",
        "source_id": "reply/r-1/x",
        "text": "بله",
        "occurred_at": NOW,
    }
    assert "client_id" not in history_item(reply, signer=SIGNER, inbox="shop", visitor_id=VISITOR)

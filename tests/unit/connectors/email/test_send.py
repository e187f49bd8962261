"""Building an agent's reply: threading headers, a stable Message-ID, refused recipients."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes
from email.policy import default

import pytest

from connectors.email.config import Inbox
from connectors.email.parse import parse_mail
from connectors.email.send import PermanentSendError, build_mime, message_id_for, thread_ids
from pipeline import contract as c

INBOX = Inbox(address="support@shop.example.com", team="Shop")


def reply(**over: object) -> c.Reply:
    data: dict[str, object] = {
        "reply_id": "r/1 x",
        "conversation_id": "conv",
        "customer_id": "cust",
        "channel": "email",
        "account": INBOX.address,
        "thread": "root@example.com",
        "to": ["email:ali@example.com"],
        "subject": "Re: سفارش",
        "text": "ارسال شد",
        "html": "<p>ارسال شد</p>",
        "in_reply_to": "q2@example.com",
        "references": [],
        "requested_at": datetime(2026, 3, 2, 10, tzinfo=UTC),
    }
    data.update(over)
    return c.Reply.model_validate(data)


def test_message_id_is_stable_per_reply_and_in_the_inbox_domain() -> None:
    a = message_id_for(reply(), INBOX)
    assert a == message_id_for(reply(text="edited"), INBOX)
    assert a != message_id_for(reply(reply_id="r-2"), INBOX)
    assert a.endswith("@shop.example.com") and " " not in a and "/" not in a


def test_thread_root_comes_first_and_the_answered_message_last() -> None:
    assert thread_ids(reply()) == ("q2@example.com", ["root@example.com", "q2@example.com"])
    r = reply(references=["root@example.com", "q2@example.com", "q1@example.com"])
    assert thread_ids(r)[1] == ["root@example.com", "q1@example.com", "q2@example.com"]
    no_id = reply(thread="sha256:" + "0" * 64, in_reply_to=None)
    assert thread_ids(no_id) == (None, [])


def test_the_built_mail_threads_back_when_the_customer_answers() -> None:
    mid = message_id_for(reply(), INBOX)
    raw = build_mime(reply(), INBOX, mid, []).as_bytes()
    sent = message_from_bytes(raw, policy=default)
    assert sent["From"] == "Shop <support@shop.example.com>"
    assert sent["In-Reply-To"] == "<q2@example.com>"
    assert sent["References"] == "<root@example.com> <q2@example.com>"
    assert sent.get_body(("html",)) is not None
    answer = (
        f"From: ali@example.com\r\nMessage-ID: <a3@example.com>\r\nIn-Reply-To: <{mid}>\r\n"
        f"References: {sent['References']} <{mid}>\r\n\r\nthanks\r\n"
    ).encode()
    m = parse_mail(answer, account=INBOX.address, received_at=datetime.now(UTC)).message
    assert m.thread == "root@example.com" and m.in_reply_to == mid


def test_a_non_email_recipient_cannot_be_mailed() -> None:
    with pytest.raises(PermanentSendError, match="phone"):
        build_mime(reply(to=["phone:+989121234567"]), INBOX, "x@y", [])

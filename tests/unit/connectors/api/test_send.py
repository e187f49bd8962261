"""An agent's reply on the api channel becomes its outbound copy on the customer's timeline."""

import base64
import json
from datetime import UTC, datetime

from connectors.api.send import OUTBOUND_TOPIC, records_for, sent_copy
from pipeline import contract as c
from pipeline import topics

AT = datetime(2026, 3, 1, 7, 0, tzinfo=UTC)


def reply(**kw: object) -> c.Reply:
    fields: dict[str, object] = {
        "reply_id": "r-1",
        "conversation_id": "conv-1",
        "customer_id": "cust-1",
        "agent_id": "sara",
        "channel": "api",
        "account": "crm",
        "thread": "ticket-88123",
        "to": ["phone:+989121234567"],
        "text": "فردا می‌رسد",
        "requested_at": AT,
    }
    return c.Reply.model_validate(fields | kw)


def event(data: c.Reply) -> bytes:
    return c.envelope(c.REPLY_REQUESTED, data, id=data.reply_id, source="/test").to_json()


def test_the_copy_goes_out_to_the_customer_on_the_same_thread() -> None:
    m = sent_copy(reply())
    assert m is not None
    assert (m.channel, m.direction, m.account, m.thread) == ("api", "out", "crm", "ticket-88123")
    assert [(i.kind, i.value) for i in m.sender] == [("phone", "+989121234567")]
    assert (m.text, m.occurred_at) == ("فردا می‌رسد", AT)
    # the reply id is in the copy's source id: the console matches its pending reply by it
    assert "r-1" in m.source_id


def test_a_replayed_reply_is_the_same_event() -> None:
    (_, first), (_, again) = records_for(event(reply()), 0, 5), records_for(event(reply()), 0, 9)
    assert first == again and first[0].topic == topics.INBOUND
    other = records_for(event(reply(reply_id="r-2")), 0, 6)[1]
    assert json.loads(other[0].value)["id"] != json.loads(first[0].value)["id"]


def test_verification_codes_are_not_put_where_agents_read() -> None:
    code = reply(conversation_id="verification:v-1", text="کد تأیید شما: 123456")
    assert sent_copy(code) is None
    assert records_for(event(code), 0, 1) == ("skipped", [])


def test_an_unreadable_record_is_dead_lettered_whole() -> None:
    outcome, records = records_for(b"{not json", 2, 41)
    assert outcome == "dead" and records[0].topic == topics.DEADLETTER
    letter = json.loads(records[0].value)["data"]
    assert (letter["topic"], letter["partition"], letter["offset"]) == (OUTBOUND_TOPIC, 2, 41)
    assert base64.b64decode(letter["value_b64"]) == b"{not json"
    assert letter["stage"] == "api.send"

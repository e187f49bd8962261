import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connectors.api.parse import parse_message
from connectors.errors import InvalidPayload

NOW = datetime(2026, 3, 1, 7, 0, tzinfo=UTC)
FIXTURES = Path(__file__).parent / "fixtures"


def test_a_full_crm_push_keeps_every_field() -> None:
    body = json.loads((FIXTURES / "crm_push.json").read_text(encoding="utf-8"))
    m = parse_message(body, now=NOW)
    assert m.channel == "api" and m.direction == "in" and m.account == "crm"
    assert m.thread == "ticket-88123" and m.display_name == "علی رضایی"
    assert m.sender[1].assurance == "claimed"
    assert m.occurred_at == datetime(2026, 3, 1, 6, 45, tzinfo=UTC)


def test_defaults_fill_channel_time_account_and_thread() -> None:
    m = parse_message({"source_id": "1", "sender": [{"kind": "api", "value": "u-1"}]}, now=NOW)
    assert (m.channel, m.account, m.thread, m.occurred_at) == ("api", "api", "api", NOW)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], None),
        ({"sender": [{"kind": "phone", "value": "09123456789"}]}, "source_id"),
        ({"source_id": "1"}, "sender"),
        ({"source_id": "1", "channel": "sms", "sender": []}, "channel"),
        ({"source_id": "1", "sender": [{"kind": "phone", "value": "12"}]}, "sender.0.value"),
        (
            {
                "source_id": "1",
                "sender": [
                    {"kind": "api", "value": "x"},
                    {"kind": "email", "value": "not-an-email"},
                ],
            },
            "sender.1.value",
        ),
        (
            {
                "source_id": "1",
                "sender": [{"kind": "api", "value": "x"}],
                "occurred_at": "yesterday",
            },
            "occurred_at",
        ),
    ],
)
def test_bad_bodies_name_the_bad_field(body: object, field: str | None) -> None:
    with pytest.raises(InvalidPayload) as err:
        parse_message(body, now=NOW)
    assert err.value.field == field

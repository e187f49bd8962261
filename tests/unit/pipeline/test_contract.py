import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from pipeline import contract as c


def msg(**over: object) -> c.Message:
    base: dict[str, object] = {
        "channel": "sms",
        "account": "+982100000000",
        "source_id": "gw-1",
        "sender": [{"kind": "phone", "value": "۰۹۱۲ ۳۴۵ ۶۷۸۹"}],
        "thread": "+989123456789",
        "occurred_at": "2026-03-01T10:00:00+03:30",
        "text": "سلام، سفارشم کی می‌رسه؟",
    }
    base.update(over)
    return c.Message.model_validate(base)


def test_event_id_is_deterministic_and_distinct_per_account_and_channel() -> None:
    a = msg()
    assert a.event_id == msg().event_id == c.message_event_id("sms", "+982100000000", "gw-1")
    assert msg(account="other").event_id != a.event_id
    assert msg(channel="telegram").event_id != a.event_id
    assert msg(source_id="gw-2").event_id != a.event_id


def test_id_parts_cannot_collide_through_the_separator() -> None:
    assert c.deterministic_id("a", "bc") != c.deterministic_id("ab", "c")
    with pytest.raises(ValueError):
        c.deterministic_id("a\x1fb")


def test_timestamps_are_normalised_to_utc_and_naive_ones_rejected() -> None:
    assert msg().occurred_at == datetime(2026, 3, 1, 6, 30, tzinfo=UTC)
    with pytest.raises(ValidationError, match="timezone"):
        msg(occurred_at="2026-03-01T10:00:00")


def test_models_are_frozen() -> None:
    m = msg()
    with pytest.raises(ValidationError):
        m.text = "changed"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"channel": "fax"}, "data.channel"),
        ({"sender": []}, "data.sender"),
        ({"sender": [{"kind": "name", "value": "Ali"}]}, "data.sender.0.kind"),
        ({"direction": "sideways"}, "data.direction"),
        ({"source_id": ""}, "data.source_id"),
        ({"text": "nul\x00byte"}, "data.text"),
        ({"unknown": 1}, "data.unknown"),
    ],
)
def test_parse_event_names_the_bad_field(change: dict[str, object], field: str) -> None:
    ev = json.loads(c.message_event(msg(), source="/t").to_json())
    ev["data"].update(change)
    with pytest.raises(c.ContractError) as err:
        c.parse_event(json.dumps(ev))
    assert err.value.field == field


def test_parse_event_round_trip_and_rejections() -> None:
    ev = c.message_event(msg(), source="/t")
    back = c.parse_event(ev.to_json(), expect=c.MESSAGE_RECEIVED)
    assert back.data == ev.data and back.id == ev.id and back.specversion == "1.0"
    with pytest.raises(c.ContractError, match="expected event type"):
        c.parse_event(ev.to_json(), expect=c.CUSTOMER_CREATED)
    with pytest.raises(c.ContractError):
        c.parse_event(b"\xff\xfe not json")
    bad = json.loads(ev.to_json())
    bad["type"] = "omnihub.nope.v1"
    with pytest.raises(c.ContractError, match="unknown event type"):
        c.parse_event(json.dumps(bad))


def test_envelope_refuses_data_of_the_wrong_type() -> None:
    with pytest.raises(TypeError):
        c.envelope(c.CUSTOMER_CREATED, msg(), id="x", source="/t")


def test_every_type_has_a_data_model_and_is_versioned() -> None:
    assert all(t.startswith("omnihub.") and t.endswith(".v1") for t in c.DATA_TYPES)
    assert len(set(c.DATA_TYPES)) == 15


def test_the_event_model_outlives_its_events_so_it_is_not_rebuilt_after_a_collection() -> None:
    """Pydantic holds a parametrised model such as ``CloudEvent[Any]`` only weakly: without a
    strong reference the garbage collector takes it along with the last event, and the next
    event rebuilds it (~1-3 ms instead of microseconds, on every event the worker and the
    router parse or create)."""
    import gc
    import weakref

    raw = c.message_event(msg(), source="/test").to_json()
    parsed = weakref.ref(type(c.parse_event(raw)))
    made = weakref.ref(type(c.message_event(msg(), source="/test")))
    gc.collect()
    assert parsed() is not None and made() is not None
    assert type(c.parse_event(raw)) is parsed() is made()

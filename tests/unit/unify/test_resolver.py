from unify.resolver import Sighting, resolve_batch


def new_id(event_id: str) -> str:
    return f"cust-{event_id}"


def test_unknown_sender_creates_one_customer_for_all_its_messages_in_a_batch() -> None:
    out = resolve_batch(
        [Sighting("e1", ("phone:+989121234567",)), Sighting("e2", ("phone:+989121234567",))],
        {},
        new_id,
    )
    assert [r.customer_id for r in out] == ["cust-e1", "cust-e1"]
    assert [r.created for r in out] == [True, False]
    assert out[0].attach == ("phone:+989121234567",) and out[1].attach == ()


def test_known_identifier_wins_and_new_ones_are_attached_to_it() -> None:
    out = resolve_batch(
        [Sighting("e1", ("email:ali@example.com", "phone:+989121234567"))],
        {"phone:+989121234567": "c-old"},
        new_id,
    )
    assert out[0].customer_id == "c-old" and not out[0].created
    assert out[0].attach == ("email:ali@example.com",)
    assert out[0].conflicts == ()


def test_identifiers_of_two_customers_are_reported_as_conflict_not_merged() -> None:
    out = resolve_batch(
        [Sighting("e1", ("phone:+989121234567", "email:ali@example.com"))],
        {"phone:+989121234567": "c1", "email:ali@example.com": "c2"},
        new_id,
    )
    assert out[0].customer_id == "c1"
    assert out[0].conflicts == ("c2",)
    assert out[0].attach == ()


def test_distinct_senders_stay_distinct() -> None:
    out = resolve_batch(
        [Sighting("e1", ("phone:+989121234567",)), Sighting("e2", ("phone:+989121234568",))],
        {},
        new_id,
    )
    assert out[0].customer_id != out[1].customer_id

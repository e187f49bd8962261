"""The identity rules, one by one: assurance, blocklist, caps, separations, survivor order."""

from datetime import UTC, datetime, timedelta

from unify.resolver import CustomerInfo, Merge, Policy, Sighting, Suggestion, resolve_batch

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PHONE = "phone:+989121234567"
PHONE2 = "phone:+989121234568"
EMAIL = "email:ali@example.com"
TG = "telegram:42"


def new_id(event_id: str) -> str:
    return f"cust-{event_id}"


def see(event: str, *idents: str, claimed: tuple[str, ...] = (), at: int = 0) -> Sighting:
    return Sighting(event, idents, T0 + timedelta(minutes=at), claimed)


def info(cid: str, age_days: int, *idents: str, separated: frozenset[str] = frozenset()):
    return CustomerInfo(cid, T0 - timedelta(days=age_days), idents, separated)


def test_unknown_sender_creates_one_customer_for_all_its_messages_in_a_batch() -> None:
    out = resolve_batch([see("e1", PHONE), see("e2", PHONE)], {}, {}, new_id)
    assert [d.customer_id for d in out] == ["cust-e1", "cust-e1"]
    assert [d.created for d in out] == [True, False]
    assert out[0].attach == (PHONE,) and out[1].attach == ()


def test_known_identifier_wins_and_new_channel_identifiers_are_attached() -> None:
    out = resolve_batch(
        [see("e1", EMAIL, PHONE)], {PHONE: "old"}, {"old": info("old", 3, PHONE)}, new_id
    )
    assert out[0].customer_id == "old" and not out[0].created
    assert out[0].attach == (EMAIL,) and out[0].merges == ()


def test_two_customers_linked_by_channel_identifiers_merge_into_the_oldest() -> None:
    customers = {"young": info("young", 1, EMAIL), "old": info("old", 9, PHONE)}
    out = resolve_batch(
        [see("e1", EMAIL, PHONE)], {PHONE: "old", EMAIL: "young"}, customers, new_id
    )
    assert out[0].customer_id == "old"
    assert out[0].merges == (Merge("old", "young", EMAIL),)


def test_survivor_ties_break_by_id_so_racing_resolvers_agree() -> None:
    customers = {"b": info("b", 1, EMAIL), "a": info("a", 1, PHONE)}
    for order in ((EMAIL, PHONE), (PHONE, EMAIL)):
        out = resolve_batch([see("e", *order)], {PHONE: "a", EMAIL: "b"}, customers, new_id)
        assert out[0].merges == (Merge("a", "b", EMAIL),)


def test_later_sightings_see_a_merge_made_earlier_in_the_batch() -> None:
    customers = {"c1": info("c1", 5, PHONE), "c2": info("c2", 1, EMAIL)}
    out = resolve_batch(
        [see("e1", PHONE, EMAIL), see("e2", EMAIL, TG)],
        {PHONE: "c1", EMAIL: "c2"},
        customers,
        new_id,
    )
    assert out[1].customer_id == "c1" and out[1].attach == (TG,) and out[1].merges == ()


def test_a_claimed_identifier_never_links_it_only_suggests() -> None:
    customers = {"visitor": info("visitor", 0, "webchat:v1"), "ali": info("ali", 30, EMAIL)}
    out = resolve_batch(
        [see("e1", "webchat:v1", claimed=(EMAIL,))],
        {"webchat:v1": "visitor", EMAIL: "ali"},
        customers,
        new_id,
    )
    d = out[0]
    assert d.customer_id == "visitor" and d.merges == () and d.attach == ()
    assert d.suggestions == (Suggestion("merge", ("visitor", "ali"), EMAIL, "claimed"),)


def test_an_unowned_claim_is_remembered_not_attached() -> None:
    out = resolve_batch([see("e1", "webchat:v1", claimed=(EMAIL,))], {}, {}, new_id)
    assert out[0].attach == ("webchat:v1",) and out[0].claims == (EMAIL,)


def test_blocklisted_identifiers_never_link_customers() -> None:
    policy = Policy(blocklist=frozenset({"phone:+982100000000", "email:noreply@*"}))
    customers = {"a": info("a", 5, "phone:+982100000000"), "b": info("b", 1, PHONE)}
    out = resolve_batch(
        [see("e1", "phone:+982100000000", PHONE), see("e2", "email:noreply@shop.example")],
        {"phone:+982100000000": "a", PHONE: "b"},
        customers,
        new_id,
        policy,
    )
    assert out[0].customer_id == "b" and out[0].merges == ()
    assert out[0].ignored == ("phone:+982100000000",)
    # only blocklisted identifiers: a customer of its own, linked to nothing
    assert out[1].created and out[1].attach == () and out[1].ignored


def test_a_merge_above_the_cap_becomes_a_suggestion() -> None:
    policy = Policy(caps={"phone": 2})
    customers = {
        "a": info("a", 5, PHONE, "phone:+989120000001"),
        "b": info("b", 1, PHONE2, EMAIL),
    }
    out = resolve_batch(
        [see("e1", PHONE, PHONE2)], {PHONE: "a", PHONE2: "b"}, customers, new_id, policy
    )
    assert out[0].merges == ()
    assert out[0].suggestions == (Suggestion("merge", ("a", "b"), PHONE2, "cap"),)


def test_attaching_above_the_cap_becomes_a_suggestion() -> None:
    policy = Policy(caps={"phone": 1})
    out = resolve_batch(
        [see("e1", PHONE, PHONE2)], {PHONE: "a"}, {"a": info("a", 5, PHONE)}, new_id, policy
    )
    assert out[0].attach == ()
    assert out[0].suggestions == (Suggestion("attach", ("a",), PHONE2, "cap"),)


def test_customers_an_agent_separated_are_not_merged_again() -> None:
    customers = {
        "a": info("a", 5, PHONE, separated=frozenset({"b"})),
        "b": info("b", 1, EMAIL, separated=frozenset({"a"})),
    }
    out = resolve_batch([see("e1", PHONE, EMAIL)], {PHONE: "a", EMAIL: "b"}, customers, new_id)
    assert out[0].merges == ()
    assert out[0].suggestions[0].reason == "separated"


def test_distinct_senders_stay_distinct() -> None:
    out = resolve_batch([see("e1", PHONE), see("e2", PHONE2)], {}, {}, new_id)
    assert out[0].customer_id != out[1].customer_id

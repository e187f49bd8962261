"""Every eligibility rule, ranking tie-break, queue-order rule and classifier, table-driven."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from router.policy import (
    AgentView,
    ConversationView,
    classify,
    detect_language,
    ineligible_reason,
    order_queue,
    plan,
    rank,
    sla_level,
    sla_target,
    urgency_matches,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CAP = {"webchat": 3, "email": 10}
KEYWORDS = ("فوری", "شکایت", "urgent", "refund", "money back")


def agent(agent_id: str, **kw: object) -> AgentView:
    base: dict[str, object] = {"skills": frozenset({"lang:fa", "lang:en"}), "capacity": CAP}
    return AgentView(agent_id, **{**base, **kw})  # type: ignore[arg-type]


def conv(conv_id: str = "c", **kw: object) -> ConversationView:
    base: dict[str, object] = {"channel": "webchat", "waiting_since": T0}
    return ConversationView(conv_id, **{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("a", "c", "reason"),
    [
        (agent("a"), conv(), None),
        (agent("a", status="away"), conv(), "offline"),
        (agent("a", status="offline"), conv(), "offline"),
        (agent("a"), conv(team="billing"), "team"),
        (agent("a", teams=frozenset({"billing"})), conv(team="billing"), None),
        (agent("a"), conv(required_skills=frozenset({"lang:fa"})), None),
        (agent("a"), conv(required_skills=frozenset({"segment:vip"})), "skills"),
        (agent("a", skills=frozenset({"lang:en"})), conv(required_skills=frozenset({"lang:fa"})),
         "skills"),
        (agent("a"), conv(channel="sms"), "channel"),  # no capacity on sms = not on sms
        (agent("a", load={"webchat": 3}), conv(), "capacity"),
        (agent("a", load={"webchat": 2}), conv(), None),
        (agent("a", load={"webchat": 3}), conv(channel="email"), None),  # per channel
        (agent("a", load={"email": 10}), conv(channel="email"), "capacity"),
    ],
)
def test_eligibility(a: AgentView, c: ConversationView, reason: str | None) -> None:
    assert ineligible_reason(a, c) == reason


@pytest.mark.parametrize(
    ("agents", "c", "expected"),
    [
        ([], conv(), []),
        # least loaded first, weighted: 1 of 3 chats (0.33) > 2 of 10 emails (0.2)
        (
            [agent("a", load={"webchat": 1}), agent("b", load={"email": 2})],
            conv(),
            ["b", "a"],
        ),
        ([agent("a", load={"webchat": 1}), agent("b")], conv(), ["b", "a"]),
        # equal load: longest idle (never offered counts as idle since forever)
        (
            [agent("a", last_offered_at=T0), agent("b", last_offered_at=T0 - timedelta(1))],
            conv(),
            ["b", "a"],
        ),
        ([agent("a", last_offered_at=T0), agent("b")], conv(), ["b", "a"]),
        ([agent("b"), agent("a")], conv(), ["a", "b"]),  # all equal: by id
        # sticky beats load, within the window, while eligible
        (
            [agent("a"), agent("s", load={"webchat": 2})],
            conv(sticky_agent="s", sticky_at=T0 - timedelta(hours=1)),
            ["s", "a"],
        ),
        (
            [agent("a"), agent("s", load={"webchat": 2})],
            conv(sticky_agent="s", sticky_at=T0 - timedelta(days=2)),
            ["a", "s"],  # outside the 24 h window
        ),
        (
            [agent("a"), agent("s", load={"webchat": 3})],
            conv(sticky_agent="s", sticky_at=T0),
            ["a"],  # sticky but full: not eligible
        ),
        # agents who passed on it come last, still before nobody
        ([agent("a"), agent("b", load={"webchat": 2})], conv(passed=frozenset({"a"})), ["b", "a"]),
        ([agent("a")], conv(passed=frozenset({"a"})), ["a"]),
        (
            [agent("a"), agent("s")],
            conv(sticky_agent="s", sticky_at=T0, passed=frozenset({"s"})),
            ["a", "s"],
        ),
    ],
)
def test_rank(agents: list[AgentView], c: ConversationView, expected: list[str]) -> None:
    assert [a.agent_id for a in rank(c, agents, T0)] == expected


@pytest.mark.parametrize(
    ("convs", "expected"),
    [
        ([conv("old", waiting_since=T0), conv("new", waiting_since=T0 + timedelta(1))],
         ["old", "new"]),
        ([conv("low", priority=0), conv("high", priority=2, waiting_since=T0 + timedelta(1))],
         ["high", "low"]),
        # same priority: earliest SLA due first, then waiting time
        (
            [conv("later", sla_due=T0 + timedelta(hours=2)),
             conv("sooner", sla_due=T0 + timedelta(hours=1), waiting_since=T0 + timedelta(1))],
            ["sooner", "later"],
        ),
        ([conv("none"), conv("due", sla_due=T0 + timedelta(days=9))], ["due", "none"]),
        ([conv("b"), conv("a")], ["a", "b"]),  # full tie: by id
    ],
)
def test_queue_order(convs: list[ConversationView], expected: list[str]) -> None:
    assert [c.conversation_id for c in order_queue(convs)] == expected


def test_plan_spreads_a_batch_like_sequential_decisions_and_stops_at_capacity() -> None:
    agents = [agent("a", capacity={"webchat": 2}), agent("b", capacity={"webchat": 1})]
    convs = [conv(f"c{n}", waiting_since=T0 + timedelta(seconds=n)) for n in range(5)]
    out = plan(convs, agents, T0)
    assert [(c.conversation_id, cands[0].agent_id) for c, cands in out] == [
        ("c0", "a"), ("c1", "b"), ("c2", "a"),
    ]


def test_plan_skips_what_nobody_can_take_and_serves_the_rest() -> None:
    agents = [agent("en", skills=frozenset({"lang:en"}), capacity={"webchat": 1})]
    convs = [
        conv("fa", required_skills=frozenset({"lang:fa"})),
        conv("en", required_skills=frozenset({"lang:en"}), waiting_since=T0 + timedelta(1)),
    ]
    assert [c.conversation_id for c, _ in plan(convs, agents, T0)] == ["en"]


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("سلام، سفارشم کی می‌رسه؟", "fa"),
        ("مرحبا، أين طلبي؟", "fa"),  # Arabic script → the Persian/Arabic desk
        ("Hello, where is my order?", "en"),
        ("سلام my iPhone خراب شده و نمی‌دونم چکار کنم", "fa"),  # majority decides
        ("Hello there, سلام", "en"),
        ("12345 !!!", None),
        ("", None),
        (None, None),
    ],
)
def test_detect_language(text: str | None, language: str | None) -> None:
    assert detect_language(text) == language


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("خیلی فوری است", ["فوری"]),
        ("از شما شکایتم را ثبت کنید", ["شکایت"]),  # Persian suffix attached
        ("شكايت دارم", ["شکایت"]),  # Arabic kaf/yeh typed on an Arabic keyboard
        ("URGENT: I want a Refund", ["urgent", "refund"]),
        ("I want my money back", ["money back"]),
        ("this is not urgently needed", []),  # Latin: whole words only
        ("refunded yesterday, thanks", []),
        ("سلام، سفارشم کی می‌رسه؟", []),
        (None, []),
    ],
)
def test_urgency_matches(text: str | None, found: list[str]) -> None:
    assert urgency_matches(text, KEYWORDS) == found


@pytest.mark.parametrize(
    ("text", "segment", "priority", "skills"),
    [
        ("سلام", None, 0, {"lang:fa"}),
        ("فوری!", None, 1, {"lang:fa"}),
        ("urgent refund", "vip", 2, {"lang:en", "segment:vip"}),
        ("hello", "vip", 1, {"lang:en", "segment:vip"}),
        ("hello", "gold", 0, {"lang:en"}),  # not a configured segment
        ("", None, 0, set()),
    ],
)
def test_classify(text: str, segment: str | None, priority: int, skills: set[str]) -> None:
    out = classify(text, keywords=KEYWORDS, segment=segment)
    assert (out.priority, set(out.required_skills)) == (priority, skills)


def test_classify_adds_configured_skills_and_caps_priority() -> None:
    out = classify("urgent", keywords=KEYWORDS, segment="vip", extra_skills=["product:loans"],
                   max_priority=1)
    assert out.priority == 1 and "product:loans" in out.required_skills


@pytest.mark.parametrize(
    ("left", "level"),
    [(3600, None), (200, None), (180, "warning"), (1, "warning"), (0, "breached"),
     (-5, "breached")],
)
def test_sla_level(left: float, level: str | None) -> None:
    due = T0 + timedelta(seconds=left)
    assert sla_level(T0, due, target=900, warn_fraction=0.2) == level


def test_sla_target_by_priority_last_repeats() -> None:
    targets = [3600.0, 900.0, 300.0]
    assert [sla_target(targets, p) for p in (-1, 0, 1, 2, 5)] == [3600, 3600, 900, 300, 300]
    with pytest.raises(ValueError):
        sla_target([], 0)

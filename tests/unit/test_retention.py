"""hub/retention.py: which record batches of the embedded broker a sweep deletes (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hub.retention import Batch, Committed, parse_batch, parse_offset_key, plan, survey

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
REC = "clusters/c1/topics/{t}/partitions/{p:010d}/records/{o:020d}.batch"


def batches(
    topic: str, bases: list[int], age: timedelta = 2 * DAY, partition: int = 0
) -> list[Batch]:
    return [
        Batch(REC.format(t=topic, p=partition, o=b), "c1", topic, partition, b, NOW - age)
        for b in bases
    ]


def group(
    name: str, topic: str, offset: int, age: timedelta = timedelta(0), p: int = 0
) -> Committed:
    return Committed(name, "c1", topic, p, offset, NOW - age)


def deleted(bs: list[Batch], cs: list[Committed], retention: timedelta = DAY) -> list[int]:
    return [b.base for b in plan(bs, cs, NOW, retention).delete]


def test_keys_are_parsed_and_others_ignored() -> None:
    b = parse_batch(REC.format(t="omnihub.inbound.v1", p=3, o=1234), NOW, 99)
    assert b is not None
    assert (b.cluster, b.topic, b.partition, b.base, b.size) == (
        "c1",
        "omnihub.inbound.v1",
        3,
        1234,
        99,
    )
    for other in (
        "clusters/c1/topics/t/partitions/0000000000/watermark.json",
        "clusters/c1/meta.json",
        "clusters/c1/topics/t/partitions/0000000000/records/notanumber.batch",
        "clusters/c1/groups/consumers/g.json",
    ):
        assert parse_batch(other, NOW) is None
    key = "clusters/c1/groups/consumers/{g}/offsets/omnihub.inbound.v1/partitions/0000000002.json"
    assert parse_offset_key(key.format(g="omnihub-pipeline")) == (
        "c1",
        "omnihub-pipeline",
        "omnihub.inbound.v1",
        2,
    )
    assert parse_offset_key(key.format(g="team/a")) == ("c1", "team/a", "omnihub.inbound.v1", 2)
    assert parse_offset_key("clusters/c1/groups/consumers/g.json") is None


def test_deletes_batches_every_group_has_read_past_and_keeps_the_newest() -> None:
    bs = batches("t", [0, 1, 2, 5, 9])  # batch 2 holds offsets 2-4, batch 5 holds 5-8
    assert deleted(bs, [group("a", "t", 4)]) == [0, 1]  # 2-4 not all read: kept
    assert deleted(bs, [group("a", "t", 5)]) == [0, 1, 2]
    assert deleted(bs, [group("a", "t", 100)]) == [0, 1, 2, 5]  # never the newest (9)
    # the slowest live group decides
    assert deleted(bs, [group("a", "t", 100), group("b", "t", 2)]) == [0, 1]
    p = plan(bs, [group("a", "t", 100), group("b", "t", 2)], NOW, DAY)
    assert p.held == {("c1", "t", 0): ("b", 2, 2)}  # batches 2 and 5: old, unread by b
    assert p.kept == 3


def test_young_batches_are_kept_however_far_groups_have_read() -> None:
    bs = batches("t", [0, 1], age=2 * DAY) + batches("t", [2, 3, 4], age=timedelta(hours=1))
    assert deleted(bs, [group("a", "t", 100)]) == [0, 1]
    assert deleted(bs, [group("a", "t", 100)], retention=timedelta(0)) == [0, 1, 2, 3]


def test_beyond_the_newest_read_batches_young_ones_go_too() -> None:
    young = timedelta(minutes=1)

    def gone(bs: list[Batch], offset: int, keep: int) -> list[int]:
        decided = plan(bs, [group("a", "t", offset)], NOW, DAY, keep_read=keep)
        return [b.base for b in decided.delete]

    bs = batches("t", list(range(10)), age=young)
    assert gone(bs, 8, 3) == [0, 1, 2, 3, 4]  # 0-7 read: the newest three of them stay
    assert gone(bs, 8, 0) == []  # 0: by age only
    assert gone(bs, 2, 3) == []  # unread batches neither count nor go
    assert gone(bs, 2, 1) == [0]
    assert gone(bs, 100, 1) == list(range(8))  # never the newest
    # whichever rule comes first: 0-2 are old, 0 is also beyond the newest five read
    mixed = batches("t", [0, 1, 2], age=2 * DAY) + batches("t", [3, 4, 5, 6], age=young)
    assert gone(mixed, 100, 5) == [0, 1, 2]
    assert gone(mixed, 100, 2) == [0, 1, 2, 3]
    assert plan(mixed, [group("a", "t", 100)], NOW, DAY, keep_read=2).kept == 3


def test_a_partition_no_live_group_reads_is_left_alone() -> None:
    bs = batches("unread", [0, 1, 2])
    p = plan(bs, [], NOW, DAY)
    assert p.delete == [] and p.unread == [("c1", "unread", 0)] and p.kept == 3
    # a group silent for longer than Kafka keeps offsets (7 days) no longer counts
    gone = group("gone", "unread", 0, age=timedelta(days=8))
    assert deleted(bs, [gone]) == []
    assert deleted(bs, [gone, group("live", "unread", 3)]) == [0, 1]


def test_partitions_and_topics_are_decided_separately() -> None:
    bs = batches("t", [0, 1, 2]) + batches("t", [0, 1, 2], partition=1) + batches("u", [0, 1])
    cs = [group("a", "t", 2), group("a", "t", 0, p=1), group("a", "u", 1)]
    got = sorted((b.topic, b.partition, b.base) for b in plan(bs, cs, NOW, DAY).delete)
    assert got == [("t", 0, 0), ("t", 0, 1), ("u", 0, 0)]


@pytest.mark.parametrize("offset", [0, 1])
def test_nothing_is_deleted_before_its_group_reads_it(offset: int) -> None:
    assert deleted(batches("t", [1, 2, 3]), [group("a", "t", offset)]) == []


def test_the_survey_counts_batches_and_what_each_live_group_has_not_read() -> None:
    bs = batches("t", [0, 1, 2, 3]) + batches("t", [0, 1], partition=1) + batches("u", [0])
    cs = [
        group("w", "t", 2),  # 2 and 3 unread
        group("w", "t", 2, p=1),  # all read
        group("r", "u", 0),  # 0 unread
        group("gone", "t", 0, age=timedelta(days=8)),  # expired: not listed
    ]
    s = survey(bs, cs, NOW)
    assert (s.batches, s.partitions, s.largest) == (7, 3, ("t", 0, 4))
    assert s.behind == {"r": 1, "w": 2}
    assert survey([], [], NOW).largest is None

"""Retention for the embedded broker: delete record batches every consumer group has read.

Why: tansu's s3 storage keeps each produced record batch as one object and, on every fetch
that has something to return, LISTs *all* the record objects of the partition (hub/s3.py).
Messages reach omnihub one at a time (an API call, a mail, an SMS), so nearly every message
is one object, and each fetch costs more the more was ever written: measured on 2 cores, one
partition, produce → consume of one record took 55 ms with 100 objects, 74 ms with 2,000 and
156 ms with 5,000 (tansu + S3 server CPU 6 → 26 → 97 ms a message). Tansu 0.6 deletes nothing
(it has no retention), so without this the embedded stack slows down for ever.

The rule, per topic partition, like Kafka's ``retention.ms`` and ``retention.bytes`` but never
ahead of a reader: a record batch every *live* consumer group of the partition has committed
past is deleted when it is older than the retention (its object's LastModified), or when more
than ``keep_read`` newer batches of the partition have been read too. The count matters more
than the age here: a fetch costs what the partition keeps, and at 200 messages/s a day's worth
would be millions of objects (measured at 50 messages/s for two minutes: tansu's CPU 21 % of a
core with 20 kept, against 55-58 % with everything kept). A group is live while it has
committed within ``group_expiry`` (7 days: Kafka's default ``offsets.retention.minutes``); a
partition no live group reads is left alone (nobody fetches it, so its objects cost nothing,
and nothing unread is lost). The newest batch of a partition is always kept: tansu answers
ListOffsets(latest) from the newest object.

It speaks plain S3 (ListObjectsV2, GetObject, DeleteObjects) to the embedded S3 server, which
does not check signatures, and runs inside ``omnihub up`` every ``broker_retention_interval``
(2 s) with ``keep_read`` = ``broker_retention_batches`` (20).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import logging
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import quote
from xml.sax.saxutils import escape

import aiohttp

log = logging.getLogger("omnihub.retention")

GROUP_EXPIRY = timedelta(days=7)
DELETE_CHUNK = 1000  # DeleteObjects takes at most 1,000 keys

Partition = tuple[str, str, int]  # cluster, topic, partition


@dataclass(frozen=True)
class Batch:
    """One record batch object: ``clusters/<c>/topics/<t>/partitions/<p>/records/<o>.batch``."""

    key: str
    cluster: str
    topic: str
    partition: int
    base: int  # offset of its first record
    modified: datetime
    size: int = 0

    @property
    def where(self) -> Partition:
        return (self.cluster, self.topic, self.partition)


@dataclass(frozen=True)
class Committed:
    """A group's committed offset (the next record it will read) for one partition."""

    group: str
    cluster: str
    topic: str
    partition: int
    offset: int
    modified: datetime

    @property
    def where(self) -> Partition:
        return (self.cluster, self.topic, self.partition)


def parse_batch(key: str, modified: datetime, size: int = 0) -> Batch | None:
    parts = key.split("/")
    if (
        len(parts) != 8
        or parts[0] != "clusters"
        or parts[2] != "topics"
        or parts[4] != "partitions"
        or parts[6] != "records"
        or not parts[7].endswith(".batch")
    ):
        return None
    try:
        return Batch(key, parts[1], parts[3], int(parts[5]), int(parts[7][:-6]), modified, size)
    except ValueError:
        return None


def parse_offset_key(key: str) -> tuple[str, str, str, int] | None:
    """(cluster, group, topic, partition) of
    ``clusters/<c>/groups/consumers/<group>/offsets/<t>/partitions/<p>.json`` (a group id may
    hold "/", so it is read from both ends)."""
    parts = key.split("/")
    if (
        len(parts) < 9
        or parts[0] != "clusters"
        or parts[2:4] != ["groups", "consumers"]
        or parts[-4] != "offsets"
        or parts[-2] != "partitions"
        or not parts[-1].endswith(".json")
    ):
        return None
    try:
        partition = int(parts[-1][:-5])
    except ValueError:
        return None
    return parts[1], "/".join(parts[4:-4]), parts[-3], partition


def live(
    committed: Iterable[Committed], now: datetime, group_expiry: timedelta = GROUP_EXPIRY
) -> Iterator[Committed]:
    """The offsets of groups that committed within ``group_expiry`` (Kafka drops the others)."""
    return (c for c in committed if now - c.modified <= group_expiry)


@dataclass
class Plan:
    delete: list[Batch] = field(default_factory=list)
    kept: int = 0
    # partition → (group, committed offset, batches it keeps that retention would delete)
    held: dict[Partition, tuple[str, int, int]] = field(default_factory=dict)
    unread: list[Partition] = field(default_factory=list)  # no live group reads it


def plan(
    batches: Iterable[Batch],
    committed: Iterable[Committed],
    now: datetime,
    retention: timedelta,
    group_expiry: timedelta = GROUP_EXPIRY,
    keep_read: int = 0,
) -> Plan:
    """Which batches to delete (pure: the sweep's whole decision).

    A batch every live group has read past goes when it is older than ``retention``, or, with
    ``keep_read`` > 0, when more than ``keep_read`` newer batches of its partition have been
    read too (like Kafka's ``retention.bytes`` beside ``retention.ms``: whichever comes first)."""
    by_partition: dict[Partition, list[Batch]] = defaultdict(list)
    for b in batches:
        by_partition[b.where].append(b)
    floors: dict[Partition, Committed] = {}
    for c in live(committed, now, group_expiry):
        if c.where not in floors or c.offset < floors[c.where].offset:
            floors[c.where] = c
    out = Plan()
    for where, found in sorted(by_partition.items()):
        found.sort(key=lambda b: b.base)
        floor = floors.get(where)
        if floor is None:
            out.unread.append(where)
            out.kept += len(found)
            continue
        # read by every group: a batch whose successor starts at or below the slowest
        # group's offset (never the newest); they are the oldest ones, a prefix of found
        read = [b for b, successor in itertools.pairwise(found) if successor.base <= floor.offset]
        surplus = len(read) - keep_read if keep_read > 0 else 0
        deleted = 0
        for i, b in enumerate(read):
            if i < surplus or now - b.modified >= retention:
                out.delete.append(b)
                deleted += 1
        held = sum(1 for b in found[len(read) : -1] if now - b.modified >= retention)
        out.kept += len(found) - deleted
        if held:
            out.held[where] = (floor.group, floor.offset, held)
    return out


# ---------------------------------------------------------------------------- S3 client
S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


class S3Error(RuntimeError):
    pass


class Bucket:
    """The three S3 calls the sweep needs, unsigned (the embedded server checks no signature)."""

    def __init__(self, session: aiohttp.ClientSession, endpoint: str, bucket: str) -> None:
        self.session = session
        self.base = f"{endpoint.rstrip('/')}/{bucket}"

    async def list(self, prefix: str) -> list[tuple[str, datetime, int]]:
        out: list[tuple[str, datetime, int]] = []
        token: str | None = None
        while True:
            params = {"list-type": "2", "prefix": prefix}
            if token:
                params["continuation-token"] = token
            async with self.session.get(self.base, params=params) as r:
                body = await r.read()
                if r.status != 200:
                    raise S3Error(f"LIST {prefix!r}: HTTP {r.status} {body[:200]!r}")
            root = ET.fromstring(body)
            for c in root.iter(f"{S3_NS}Contents"):
                key = c.findtext(f"{S3_NS}Key") or ""
                stamp = (c.findtext(f"{S3_NS}LastModified") or "").replace("Z", "+00:00")
                out.append(
                    (key, datetime.fromisoformat(stamp), int(c.findtext(f"{S3_NS}Size") or 0))
                )
            if root.findtext(f"{S3_NS}IsTruncated") != "true":
                return out
            token = root.findtext(f"{S3_NS}NextContinuationToken")

    async def get(self, key: str) -> bytes | None:
        async with self.session.get(f"{self.base}/{quote(key)}") as r:
            body = await r.read()
            if r.status == 404:
                return None
            if r.status != 200:
                raise S3Error(f"GET {key!r}: HTTP {r.status} {body[:200]!r}")
            return body

    async def delete(self, keys: list[str]) -> int:
        """Delete keys (any number); returns how many the server reported failed."""
        failed = 0
        for chunk in _chunks(keys, DELETE_CHUNK):
            body = (
                "<Delete><Quiet>true</Quiet>"
                + "".join(f"<Object><Key>{escape(k)}</Key></Object>" for k in chunk)
                + "</Delete>"
            ).encode()
            headers = {
                "Content-MD5": base64.b64encode(hashlib.md5(body).digest()).decode(),
                "Content-Type": "application/xml",
            }
            async with self.session.post(
                self.base, params={"delete": ""}, data=body, headers=headers
            ) as r:
                answer = await r.read()
                if r.status != 200:
                    raise S3Error(f"DeleteObjects: HTTP {r.status} {answer[:200]!r}")
            failed += sum(1 for _ in ET.fromstring(answer).iter(f"{S3_NS}Error"))
        return failed


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# ---------------------------------------------------------------------------- the sweep
@dataclass
class Sweep:
    plan: Plan
    deleted: int
    freed_bytes: int
    failed: int
    seconds: float

    def summary(self, sweeps: int = 1) -> str:
        """One line; ``sweeps`` > 1 when deleted/freed_bytes add up that many sweeps."""
        p = self.plan
        batches = "record batch" if self.deleted == 1 else "record batches"
        took = (
            f"in {sweeps:,} sweeps (the last {self.seconds:.1f}s)"
            if sweeps > 1
            else f"in {self.seconds:.1f}s"
        )
        text = (
            f"deleted {self.deleted:,} {batches} ({self.freed_bytes / 1e6:.1f} MB) read by "
            f"every consumer group, kept {p.kept:,}, {took}"
        )
        if self.failed:
            text += f"; {self.failed} could not be deleted (next sweep retries)"
        for (_, topic, partition), (group, offset, n) in sorted(p.held.items()):
            text += (
                f"; {topic}/{partition}: {n:,} batches past retention kept for group "
                f"{group!r} (committed {offset:,})"
            )
        return text


async def load(bucket: Bucket) -> tuple[list[Batch], list[Committed]]:
    """Every record batch and every committed offset the broker keeps in ``bucket``."""
    batches: list[Batch] = []
    committed: list[Committed] = []
    for key, modified, size in await bucket.list("clusters/"):
        b = parse_batch(key, modified, size)
        if b is not None:
            batches.append(b)
            continue
        where = parse_offset_key(key)
        if where is None:
            continue
        body = await bucket.get(key)
        try:
            offset = int(json.loads(body or b"{}")["offset"])
        except (ValueError, KeyError, TypeError):
            log.warning("retention.unreadable_offset key=%s body=%r", key, (body or b"")[:100])
            continue
        cluster, group, topic, partition = where
        committed.append(Committed(group, cluster, topic, partition, max(offset, 0), modified))
    return batches, committed


async def sweep(
    bucket: Bucket,
    retention: timedelta,
    *,
    now: datetime | None = None,
    group_expiry: timedelta = GROUP_EXPIRY,
    keep_read: int = 0,
) -> Sweep:
    t0 = time.monotonic()
    batches, committed = await load(bucket)
    decided = plan(batches, committed, now or datetime.now(UTC), retention, group_expiry, keep_read)
    keys = [b.key for b in decided.delete]
    failed = await bucket.delete(keys) if keys else 0
    return Sweep(
        decided,
        len(keys) - failed,
        sum(b.size for b in decided.delete),
        failed,
        time.monotonic() - t0,
    )


@dataclass
class Survey:
    """What the broker holds, for ``omnihub doctor``."""

    batches: int
    partitions: int
    largest: tuple[str, int, int] | None  # topic, partition, batches kept
    behind: dict[str, int]  # live group → record batches not yet read, over its partitions


def survey(
    batches: list[Batch],
    committed: list[Committed],
    now: datetime,
    group_expiry: timedelta = GROUP_EXPIRY,
) -> Survey:
    per: dict[Partition, list[int]] = defaultdict(list)
    for b in batches:
        per[b.where].append(b.base)
    largest = max(per.items(), key=lambda kv: len(kv[1]), default=None)
    behind: dict[str, int] = {}
    for c in live(committed, now, group_expiry):
        unread = sum(1 for base in per.get(c.where, ()) if base >= c.offset)
        behind[c.group] = behind.get(c.group, 0) + unread
    return Survey(
        len(batches),
        len(per),
        None if largest is None else (largest[0][1], largest[0][2], len(largest[1])),
        dict(sorted(behind.items())),
    )


async def run(
    endpoint: str,
    bucket: str,
    retention: timedelta,
    interval: float,
    *,
    keep_read: int = 0,
    first_after: float = 60.0,
    report: Callable[[str], None] | None = None,
    report_every: float = 600.0,
) -> None:
    """Sweep every ``interval`` seconds until cancelled; a failed sweep is logged, not fatal.

    A sweep that took long (a big backlog to list, a busy machine) spaces the next ones out:
    at least ten times its own duration, so sweeping never takes more than a tenth of the
    time (measured at 50 messages/s on 2 cores: 70-210 ms a sweep, 15-45 ms of it this
    process's CPU, most of it deleting what was read since the last).
    ``report`` gets a line when a sweep first deletes or holds back something, then at most
    one every ``report_every`` seconds adding up the sweeps since the last line."""
    await asyncio.sleep(first_after)
    timeout = aiohttp.ClientTimeout(total=300)
    reported_at: float | None = None
    sweeps = deleted = freed = 0
    async with aiohttp.ClientSession(timeout=timeout) as session:
        b = Bucket(session, endpoint, bucket)
        while True:
            took = 0.0
            try:
                done = await sweep(b, retention, keep_read=keep_read)
                took = done.seconds
                sweeps += 1
                deleted += done.deleted
                freed += done.freed_bytes
                noteworthy = deleted or done.failed or done.plan.held
                due = reported_at is None or time.monotonic() - reported_at >= report_every
                if noteworthy and due:
                    total = Sweep(done.plan, deleted, freed, done.failed, done.seconds)
                    (report or log.info)(f"broker retention: {total.summary(sweeps)}")
                    reported_at = time.monotonic()
                    sweeps = deleted = freed = 0
            except (aiohttp.ClientError, TimeoutError, S3Error, ET.ParseError) as exc:
                log.warning("retention.sweep_failed error=%s (next try in %.0fs)", exc, interval)
            await asyncio.sleep(max(interval, 10 * took))


__all__ = [
    "Batch",
    "Bucket",
    "Committed",
    "Plan",
    "Survey",
    "Sweep",
    "load",
    "parse_batch",
    "plan",
    "run",
    "survey",
    "sweep",
]

"""The store floor: how fast could any pipeline go that ends with the documents omnihub wrote?

After a benchmark's resolution/throughput phase on a fresh stack, the customers, identities,
conversations and interactions collections hold exactly what the pipeline wrote for the
workload. Writing those final documents once each — ``insert_many``, 500 a batch, unordered,
into scratch collections carrying the product's own indexes (store.mongo.INDEXES) — with no
reads, no updates, no broker and no worker is a lower bound on the store work of any pipeline
that ends in the same state on the same server. One read is added, the one no resolver can
skip: every message's sender identifiers looked up in identities, 500 messages a batch,
through the product's own chunked ``$in`` (store.mongo.find_in). ``messages / that time`` is
then an upper bound on the throughput such a pipeline can reach, whatever its code does.

Both ingest.py and identity.py print it beside their limit, as a ratio to that limit: when the
floor's own ratio is under a target, the target cannot be met on this store by code alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# what every message needs: who sent it (identities, customers), the conversation it belongs
# to, and the message itself on the timeline
COLLECTIONS = ("identities", "customers", "conversations", "interactions")
LOOKUP = "lookup"  # the senders' identifiers read from identities
BATCH = 500


@dataclass
class Floor:
    messages: int
    seconds: dict[str, float] = field(default_factory=dict)  # collection -> insert time
    docs: dict[str, int] = field(default_factory=dict)  # collection -> documents

    @property
    def total_s(self) -> float:
        return sum(self.seconds.values())

    @property
    def rate(self) -> float:
        """Messages per second if the store did nothing but write the final documents."""
        return self.messages / self.total_s if self.total_s else 0.0

    def lines(self, limit: float) -> list[str]:
        """The benchmarks' summary lines: the floor, its ratio to ``limit``, where it went."""
        spent = ", ".join(
            f"{name} {self.docs[name]:,} in {self.seconds[name]:.1f} s" for name in COLLECTIONS
        )
        return [
            f"  floor       {self.rate:,.0f} msg/s = {self.rate / limit:.3f} of the limit: the"
            " store doing nothing but insert_many of the final documents, once each, with their"
            " indexes, and one lookup of each message's senders (no other reads, no updates,"
            " no broker, no worker):",
            f"              {spent}; the senders looked up in {self.seconds[LOOKUP]:.1f} s",
        ]


async def measure(db: Any, messages: int, run: str, log: Callable[[str], None]) -> Floor:
    """Copy each of COLLECTIONS of ``db`` into a scratch collection with its indexes and time
    the inserts (the copying reads are not timed); scratch collections are dropped after."""
    # imported here: this module comes before _stack in the benchmarks' imports, and so
    # may import only the standard library at the top (see _stack on sys.path)
    from store.mongo import INDEXES, find_in

    floor = Floor(messages)
    for name in COLLECTIONS:
        docs = [d async for d in db[name].find({})]
        if name == "interactions":
            t0 = time.monotonic()
            for i in range(0, len(docs), BATCH):
                senders = [s for d in docs[i : i + BATCH] for s in d.get("sender") or ()]
                await find_in(db["identities"], "_id", senders)
            floor.seconds[LOOKUP] = time.monotonic() - t0
        scratch = db[f"bench_floor_{run}_{name}"]
        try:
            await scratch.drop()
            if INDEXES.get(name):
                await scratch.create_indexes(INDEXES[name])
            t0 = time.monotonic()
            for i in range(0, len(docs), BATCH):
                await scratch.insert_many(docs[i : i + BATCH], ordered=False)
            floor.seconds[name] = time.monotonic() - t0
        finally:
            await scratch.drop()
        floor.docs[name] = len(docs)
        log(f"floor: {name} {len(docs):,} documents in {floor.seconds[name]:.1f}s")
    return floor

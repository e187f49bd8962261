"""Identity actions people take: confirm or reject a merge suggestion, unmerge, verify a
claimed identifier with a code. Each one is idempotent and announces itself on the public
customer-event stream."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline import contract as c
from pipeline import topics
from pipeline.publish import Publisher, Record
from store import identities, merges, suggestions, verifications
from store.mongo import Doc, Store

SOURCE = "/omnihub/api"

# which channel carries a verification code to which kind of identifier
CODE_CHANNELS: dict[str, c.Channel] = {"phone": "sms", "email": "email", "telegram": "telegram"}


class IdentityActionError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.field = status, code, field


@dataclass
class IdentityActions:
    store: Store
    publisher: Publisher
    verification_ttl: float = 600.0
    senders: dict[str, str] | None = None
    """channel → account that sends verification codes"""

    async def _emit(self, type_: str, data: Any, event_id: str, customer_id: str) -> None:
        ev = c.envelope(type_, data, id=event_id, source=SOURCE, subject=customer_id)
        await self.publisher.publish(
            [Record(topics.CUSTOMER_EVENTS, customer_id.encode(), ev.to_json())]
        )

    async def _merge(
        self, a: str, b: str, *, reason: str, identifier: str | None, trigger: str
    ) -> Doc | None:
        ra, rb = await merges.root(self.store, a), await merges.root(self.store, b)
        if ra == rb:
            return None
        docs = {
            d["_id"]: d
            async for d in self.store.customers.find({"_id": {"$in": [ra, rb]}}, {"created_at": 1})
        }
        if len(docs) != 2:
            raise IdentityActionError(404, "not_found", "customer not found")
        survivor, loser = sorted((ra, rb), key=lambda x: (docs[x]["created_at"], x))
        entry = await merges.merge(
            self.store,
            c.deterministic_id(trigger, "merge", loser),
            survivor,
            loser,
            reason=reason,
            identifier=identifier,
            trigger=trigger,
            now=c.utcnow(),
        )
        if entry is not None:
            await self._emit(
                c.CUSTOMER_MERGED,
                c.CustomerMerged(
                    merge_id=entry["_id"],
                    survivor_id=entry["survivor_id"],
                    merged_id=entry["loser_id"],
                    reason=reason,
                ),
                c.derived_id(entry["_id"], c.CUSTOMER_MERGED),
                entry["survivor_id"],
            )
        return entry

    async def _link(
        self, customer_id: str, identifier: str, *, trigger: str, reason: str
    ) -> Doc | None:
        """Give ``identifier`` to the customer; if someone else owns it, merge the two."""
        customer_id = await merges.root(self.store, customer_id)
        owners = await identities.link(self.store, {identifier: customer_id}, c.utcnow())
        owner = await merges.root(self.store, owners[identifier])
        if owner != customer_id:
            return await self._merge(
                customer_id, owner, reason=reason, identifier=identifier, trigger=trigger
            )
        await self.store.customers.update_one(
            {"_id": customer_id}, {"$addToSet": {"identifiers": identifier}}
        )
        await self._emit(
            c.CUSTOMER_IDENTIFIED,
            c.CustomerIdentified(
                customer_id=customer_id, identifier=identifier, assurance="channel"
            ),
            c.derived_id(trigger, c.CUSTOMER_IDENTIFIED),
            customer_id,
        )
        return None

    # ------------------------------------------------------------------ suggestions
    async def decide(self, suggestion_id: str, confirm: bool, by: str | None) -> Doc:
        doc = await suggestions.get(self.store, suggestion_id)
        if doc is None:
            raise IdentityActionError(404, "not_found", "suggestion not found")
        if doc["state"] != "open":
            if doc["state"] == ("confirmed" if confirm else "rejected"):
                return doc  # asked twice: same answer
            raise IdentityActionError(409, "conflict", f"suggestion is already {doc['state']}")
        decided = await suggestions.decide(
            self.store, suggestion_id, "confirmed" if confirm else "rejected", by, c.utcnow()
        )
        if decided is None:  # decided concurrently
            return await self.decide(suggestion_id, confirm, by)
        custs = decided["customers"]
        if not confirm:
            if len(custs) == 2:  # keep them apart from now on
                for me, other in ((custs[0], custs[1]), (custs[1], custs[0])):
                    await self.store.customers.update_one(
                        {"_id": me}, {"$addToSet": {"separated_from": other}}
                    )
            return decided
        reason = f"suggestion confirmed by {by or 'system'}"
        if decided["kind"] == "merge":
            entry = await self._merge(
                custs[0],
                custs[1],
                reason=reason,
                identifier=decided["identifier"],
                trigger=suggestion_id,
            )
            if entry is not None:
                await self.store.suggestions.update_one(
                    {"_id": suggestion_id}, {"$set": {"merge_id": entry["_id"]}}
                )
        else:
            await self._link(custs[0], decided["identifier"], trigger=suggestion_id, reason=reason)
        return await suggestions.get(self.store, suggestion_id) or decided

    # ------------------------------------------------------------------ unmerge
    async def unmerge(self, customer_id: str, merge_id: str | None, by: str | None) -> Doc:
        if merge_id is None:
            merge_id = await self._pick_merge(customer_id)
        entry = await self.store.merges.find_one({"_id": merge_id})
        if entry is None or customer_id not in (entry["survivor_id"], entry["loser_id"]):
            raise IdentityActionError(404, "not_found", "no such merge of this customer")
        try:
            done = await merges.unmerge(self.store, merge_id, c.utcnow(), by=by)
        except merges.MergeError as exc:
            raise IdentityActionError(exc.status, "conflict", str(exc)) from None
        await self._emit(
            c.CUSTOMER_UNMERGED,
            c.CustomerUnmerged(
                merge_id=merge_id, survivor_id=done["survivor_id"], restored_id=done["loser_id"]
            ),
            c.derived_id(merge_id, c.CUSTOMER_UNMERGED),
            done["survivor_id"],
        )
        return done

    async def _pick_merge(self, customer_id: str) -> str:
        as_loser = await self.store.merges.find_one(
            {"loser_id": customer_id, "state": "done"}, sort=[("created_at", -1)]
        )
        if as_loser is not None:
            return str(as_loser["_id"])
        as_survivor = [
            d
            async for d in self.store.merges.find(
                {"survivor_id": customer_id, "state": "done"}, {"_id": 1}
            ).limit(2)
        ]
        if len(as_survivor) == 1:
            return str(as_survivor[0]["_id"])
        if not as_survivor:
            raise IdentityActionError(404, "not_found", "this customer has no merge to undo")
        raise IdentityActionError(
            400, "invalid_field", "several merges: say which with merge_id", "merge_id"
        )

    # ------------------------------------------------------------------ verification codes
    async def start_verification(self, customer_id: str, identifier: str) -> Doc:
        kind = identifier.split(":", 1)[0]
        channel = CODE_CHANNELS.get(kind)
        if channel is None:
            raise IdentityActionError(
                400,
                "invalid_field",
                f"identifier: a {kind} identifier cannot receive a code",
                "identifier",
            )
        customer_id = await merges.root(self.store, customer_id)
        if await self.store.customers.find_one({"_id": customer_id}, {"_id": 1}) is None:
            raise IdentityActionError(404, "not_found", "customer not found")
        doc, code = await verifications.create(
            self.store, customer_id, identifier, c.utcnow(), self.verification_ttl
        )
        account = (self.senders or {}).get(channel, "omnihub")
        reply = c.Reply(
            reply_id=doc["_id"],
            conversation_id=f"verification:{doc['_id']}",
            customer_id=customer_id,
            channel=channel,
            account=account,
            thread=identifier,
            to=[identifier],
            subject="Your verification code" if channel == "email" else None,
            text=f"کد تأیید شما: {code}\nYour verification code: {code}",
            requested_at=c.utcnow(),
        )
        ev = c.envelope(c.REPLY_REQUESTED, reply, id=doc["_id"], source=SOURCE, subject=customer_id)
        await self.publisher.publish(
            [Record(topics.outbound(channel), customer_id.encode(), ev.to_json())]
        )
        return doc

    async def confirm_verification(self, verification_id: str, code: str) -> Doc:
        outcome, doc = await verifications.check(self.store, verification_id, code, c.utcnow())
        if outcome == "not_found":
            raise IdentityActionError(404, "not_found", "verification not found")
        if outcome == "wrong_code":
            raise IdentityActionError(400, "invalid_field", "code: wrong code", "code")
        if outcome in ("expired", "exhausted"):
            raise IdentityActionError(410, "gone", f"verification {outcome}; start a new one")
        assert doc is not None
        if outcome == "confirmed":
            await self._link(
                doc["customer_id"],
                doc["identifier"],
                trigger=verification_id,
                reason="claimed identifier verified by code",
            )
            # suggestions this proof settles
            await self.store.suggestions.update_many(
                {"identifier": doc["identifier"], "state": "open", "reason": "claimed"},
                {
                    "$set": {
                        "state": "confirmed",
                        "decided_by": "verification",
                        "decided_at": c.utcnow(),
                    }
                },
            )
        return doc

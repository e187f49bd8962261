"""What agents and supervisors do with a conversation: reply, resolve, reopen, transfer, notes.

Who may: the assigned agent, or a supervisor/admin (the API token acts as admin). Every state
change is a guarded update on the conversation as it was read, so two people acting at once
get one success and one 409, never a half-done mix.
"""

from __future__ import annotations

import uuid
from typing import Any

from pymongo.errors import DuplicateKeyError

from hub.web import Principal
from pipeline import contract as c
from pipeline import topics
from pipeline.publish import Record
from router.errors import RoutingError, conflict, forbidden, not_found
from router.service import SOURCE, Router
from store import agents, conversations, identities, notes, offers, teams
from store.mongo import Doc

# the identifier kind a channel delivers to; the api channel's pushing system gets the
# identifiers it sent, whatever their kind
RECIPIENT_KIND = {
    "email": "email:", "sms": "phone:", "call": "phone:", "telegram": "telegram:",
    "webchat": "webchat:", "api": "",
}


def can_see(p: Principal, conv: Doc) -> bool:
    """Supervisors see all; an agent sees what is offered or assigned to them, what they
    handled once it is resolved, and their teams' waiting queue."""
    if p.at_least("supervisor"):
        return True
    me = p.agent_id
    if me in (conv.get("assignee"), conv.get("offer_agent")):
        return True
    if not conv.get("active") and me == conv.get("last_agent"):
        return True  # what they handled, after it was resolved
    waiting = conv.get("active") and conv.get("assignee") is None
    return bool(waiting and conv.get("team") and conv["team"] in p.teams)


async def visible(router: Router, p: Principal, conversation_id: str) -> Doc:
    conv = await conversations.get(router.store, conversation_id)
    if conv is None:
        raise not_found("conversation")
    if not can_see(p, conv):
        raise forbidden("this conversation is not offered or assigned to you")
    return conv


def _require_handler(p: Principal, conv: Doc) -> None:
    if p.at_least("supervisor") or conv.get("assignee") == p.agent_id:
        return
    raise forbidden("only the assigned agent or a supervisor can do this")


def _require_active(conv: Doc) -> None:
    if not conv.get("active"):
        raise conflict("the conversation is resolved; reopen it first", "resolved")


async def _release_holder(router: Router, conv: Doc) -> None:
    """Give back what the previous holder (assignee or offered agent) held for ``conv``."""
    now = c.utcnow()
    if conv.get("assignee"):
        await agents.release(router.store, conv["assignee"], conv["channel"], conv["_id"])
    if conv.get("offer_id"):
        offer_id, agent_id = conv["offer_id"], conv.get("offer_agent")
        if await offers.transition(router.store, offer_id, "cancelled", now, fetch=False):
            if agent_id is None:  # conversations claimed before offer_agent existed
                agent_id = ((await offers.get(router.store, offer_id)) or {}).get("agent_id")
            if agent_id is not None:
                await agents.release(router.store, agent_id, conv["channel"], conv["_id"])
                await router.sockets.notify(
                    agent_id, {"type": "offer.cancelled", "offer_id": offer_id}
                )


async def _publish(router: Router, type_: str, data: Any, event_id: str, customer: str) -> None:
    event = c.envelope(type_, data, id=event_id, source=SOURCE, subject=customer)
    await router.publisher.publish(
        [Record(topics.CUSTOMER_EVENTS, customer.encode(), event.to_json())]
    )


# ---------------------------------------------------------------------------- reply
async def reply(
    router: Router,
    p: Principal,
    conversation_id: str,
    text: str,
    *,
    subject: str | None = None,
    html: str | None = None,
    client_id: str | None = None,
) -> dict[str, Any]:
    """Publish the reply for the channel's connector; stamps the first response."""
    store = router.store
    conv = await visible(router, p, conversation_id)
    _require_active(conv)
    _require_handler(p, conv)
    history = [
        d
        async for d in store.interactions.find(
            {"conversation_id": conv["_id"]}, {"direction": 1, "sender": 1, "source_id": 1,
                                              "subject": 1, "occurred_at": 1}
        ).sort("occurred_at", 1).limit(200)
    ]
    inbound = [d for d in history if d.get("direction") == "in"]
    kind = RECIPIENT_KIND[conv["channel"]]
    senders = (inbound[-1].get("sender") or []) if inbound else []
    to = [i for i in senders if i.startswith(kind)]
    if not to:
        to = [i for i in await identities.of_customer(store, conv["customer_id"])
              if i.startswith(kind)][:1]
    if not to:
        what = kind.rstrip(":") or "known"
        raise conflict(f"the customer has no {what} identifier to reply to", "no_recipient")
    if conv["channel"] == "email" and subject is None:
        first = next((d.get("subject") for d in history if d.get("subject")), None)
        if first:
            subject = first if first.lower().startswith("re:") else f"Re: {first}"
    reply_id = (
        c.derived_id(conv["_id"], f"reply\x1e{client_id}") if client_id else str(uuid.uuid4())
    )
    now = c.utcnow()
    data = c.Reply(
        reply_id=reply_id,
        conversation_id=conv["_id"],
        customer_id=conv["customer_id"],
        agent_id=p.agent_id,
        channel=conv["channel"],
        account=conv.get("account") or conv["channel"],
        thread=conv["thread"],
        to=to,
        subject=subject,
        text=text,
        html=html,
        in_reply_to=inbound[-1].get("source_id") if inbound else None,
        references=[d["source_id"] for d in history if d.get("source_id")][-20:]
        if conv["channel"] == "email"
        else [],
        requested_at=now,
    )
    event = c.envelope(
        c.REPLY_REQUESTED, data, id=reply_id, source=SOURCE, subject=conv["customer_id"]
    )
    await router.publisher.publish(
        [Record(topics.outbound(conv["channel"]), conv["customer_id"].encode(), event.to_json())]
    )
    first = await conversations.stamp_first_response(store, conv["_id"], now)
    out = {"reply_id": reply_id, "status": "requested", "first_response": first, "to": to}
    await router.sockets.notify(
        conv.get("assignee"),
        {"type": "reply", "conversation_id": conv["_id"], "reply_id": reply_id,
         "agent_id": p.agent_id, "text": text, "requested_at": now},
    )
    return out


# ---------------------------------------------------------------------------- typing
TYPING_CHANNELS = frozenset({"webchat"})


async def typing(router: Router, p: Principal, conversation_id: str, state: str) -> bool:
    """The handling agent is typing (``start``) or stopped (``stop``): a signal for the
    channel's connector to show the customer. False when the channel has no such thing."""
    conv = await visible(router, p, conversation_id)
    _require_active(conv)
    _require_handler(p, conv)
    if conv["channel"] not in TYPING_CHANNELS:
        return False
    kind = RECIPIENT_KIND[conv["channel"]]
    last = await router.store.interactions.find_one(
        {"conversation_id": conv["_id"], "direction": "in"}, {"sender": 1},
        sort=[("occurred_at", -1)],
    )
    to = [i for i in (last or {}).get("sender") or [] if i.startswith(kind)]
    if not to:
        return False
    now = c.utcnow()
    data = c.Typing(
        conversation_id=conv["_id"],
        customer_id=conv["customer_id"],
        channel=conv["channel"],
        account=conv.get("account") or conv["channel"],
        thread=conv["thread"],
        who="agent",
        state=state,  # type: ignore[arg-type]
        identifier=to[0],
        agent_id=p.agent_id,
        at=now,
    )
    event = c.envelope(
        c.CONVERSATION_TYPING,
        data,
        id=c.deterministic_id(conv["_id"], "typing", p.agent_id or "", now.isoformat()),
        source=SOURCE,
        subject=conv["customer_id"],
    )
    await router.publisher.publish(
        [Record(topics.outbound(conv["channel"]), conv["customer_id"].encode(), event.to_json())]
    )
    return True


# ---------------------------------------------------------------------------- resolve, reopen
async def resolve(router: Router, p: Principal, conversation_id: str) -> Doc:
    conv = await visible(router, p, conversation_id)
    _require_active(conv)
    _require_handler(p, conv)
    now = c.utcnow()
    done = await conversations.resolve(router.store, conv, p.agent_id, now)
    if done is None:
        raise conflict("the conversation changed meanwhile; reload it")
    await _release_holder(router, conv)
    await _publish(
        router,
        c.CONVERSATION_RESOLVED,
        c.ConversationResolved(
            conversation_id=conv["_id"],
            customer_id=conv["customer_id"],
            agent_id=conv.get("assignee") or p.agent_id,
            resolved_at=now,
        ),
        c.derived_id(conv["_id"], f"{c.CONVERSATION_RESOLVED}\x1e{now.isoformat()}"),
        conv["customer_id"],
    )
    if conv.get("assignee") != p.agent_id:
        await router.sockets.notify(
            conv.get("assignee"), {"type": "conversation.resolved", "conversation_id": conv["_id"]}
        )
    router.spawn(router.drain())  # capacity freed: pull the next waiting conversation
    return done


async def reopen(router: Router, p: Principal, conversation_id: str) -> Doc:
    conv = await conversations.get(router.store, conversation_id)
    if conv is None:
        raise not_found("conversation")
    if not (p.at_least("supervisor") or p.agent_id in (conv.get("last_agent"),
                                                       conv.get("resolved_by"))):
        raise forbidden("only its last agent or a supervisor can reopen a conversation")
    if conv.get("active"):
        raise conflict("the conversation is not resolved", "not_resolved")
    now = c.utcnow()
    try:
        done = await conversations.reopen(router.store, conv["_id"], p.agent_id, now)
    except DuplicateKeyError:
        raise conflict(
            "this thread already has another open conversation; continue there", "thread_busy"
        ) from None
    if done is None:
        raise conflict("the conversation changed meanwhile; reload it")
    last = await router.store.interactions.find_one(
        {"conversation_id": conv["_id"]}, {"_id": 1}, sort=[("occurred_at", -1)]
    )
    await _publish(
        router,
        c.CONVERSATION_REOPENED,
        c.ConversationReopened(
            conversation_id=conv["_id"],
            customer_id=conv["customer_id"],
            interaction_id=(last or {}).get("_id") or conv.get("opened_by") or conv["_id"],
            reopened_at=now,
        ),
        c.derived_id(conv["_id"], f"{c.CONVERSATION_REOPENED}\x1e{now.isoformat()}"),
        conv["customer_id"],
    )
    router.spawn(router.route(conv["_id"]))
    return done


# ---------------------------------------------------------------------------- transfer
async def transfer(
    router: Router,
    p: Principal,
    conversation_id: str,
    *,
    agent_id: str | None = None,
    team_id: str | None = None,
    note: str | None = None,
) -> Doc:
    """Hand the conversation to one agent (as an offer they accept) or to a team's queue."""
    store = router.store
    conv = await visible(router, p, conversation_id)
    _require_active(conv)
    _require_handler(p, conv)
    now = c.utcnow()
    previous = conv.get("assignee") or conv.get("offer_agent")
    info = {"from": previous, "by": p.agent_id, "note": note, "at": now}
    if agent_id is not None:
        target = await agents.get(store, agent_id)
        if target is None or not target.get("active", True):
            raise RoutingError(400, "invalid_field", "agent_id: no such active agent", "agent_id")
        if agent_id == previous:
            raise conflict("the conversation is already with this agent")
        cap = (target.get("capacity") or {}).get(conv["channel"], 0)
        if await agents.reserve(store, agent_id, conv["channel"], cap, conv["_id"], now) is None:
            raise conflict(
                "that agent is offline or has no room on this channel now", "agent_unavailable"
            )
        offer = await router.make_offer(conv, agent_id, now, transfer=info)
        assert offer is not None
        moved = await conversations.unassign(
            store, conv, {"offer_id": offer["_id"], "offer_agent": agent_id}, passed=previous
        )
        if moved is None:
            await offers.transition(store, offer["_id"], "cancelled", now)
            await agents.release(store, agent_id, conv["channel"], conv["_id"])
            raise conflict("the conversation changed meanwhile; reload it")
        await _release_holder(router, conv)
        if await router.still_pending(offer, conv["_id"]):
            await router.push_offer(offer, moved)
    else:
        assert team_id is not None
        if await teams.get(store, team_id) is None:
            raise RoutingError(400, "invalid_field", "team_id: no such team", "team_id")
        moved = await conversations.unassign(store, conv, {"team": team_id}, passed=previous)
        if moved is None:
            raise conflict("the conversation changed meanwhile; reload it")
        await _release_holder(router, conv)
        router.requeued(moved)
    await add_note(router, p, conv["_id"], note or "", kind="transfer", extra=info | {
        "to_agent": agent_id, "to_team": team_id}, check=False)
    if previous and previous != p.agent_id:
        await router.sockets.notify(
            previous, {"type": "conversation.transferred", "conversation_id": conv["_id"]}
        )
    # a transfer publishes no event of its own: tell the lists (the team's queue) here
    router.spawn(router.announce([conv["_id"]]))
    router.spawn(router.drain())
    return moved


# ---------------------------------------------------------------------------- notes
async def add_note(
    router: Router,
    p: Principal,
    conversation_id: str,
    text: str,
    *,
    kind: str = "note",
    extra: Doc | None = None,
    check: bool = True,
) -> Doc:
    conv = await visible(router, p, conversation_id) if check else await conversations.get(
        router.store, conversation_id
    )
    assert conv is not None
    doc = {
        "_id": str(uuid.uuid4()),
        "conversation_id": conv["_id"],
        "customer_id": conv["customer_id"],
        "author_id": p.agent_id,
        "author_name": p.name or ("system" if p.kind == "system" else None),
        "kind": kind,
        "text": text,
        "created_at": c.utcnow(),
        **(extra or {}),
    }
    await notes.add(router.store, doc)
    watcher = conv.get("assignee")
    if kind == "note" and watcher and watcher != p.agent_id:
        await router.sockets.notify(
            watcher, {"type": "note", "conversation_id": conv["_id"], "note_id": doc["_id"],
                      "author": doc["author_name"], "text": text}
        )
    return doc

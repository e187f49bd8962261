"""The web chat connector against a real tansu and SecantusDB, with real WebSocket clients:
acks only after Kafka, origins, limits, exactly-once resends, history, replies to every tab,
dead letters, typing, uploads and a slow reader that must not hold anybody up."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from connectors.webchat.send import LiveFanout, ReplyRecorder
from connectors.webchat.service import WebchatConnector, configured_inboxes
from connectors.webchat.tokens import Signer, identity_hash
from hub.bootstrap import create_topics
from hub.settings import Settings
from pipeline import contract as c
from pipeline import topics
from pipeline.agents.ingest import Ingestor, RawRecord
from pipeline.publish import KafkaPublisher, Record
from store import blobs
from store.mongo import Store, connect, ensure_indexes
from tests.integration.email_support import data_of, tansu_on, until
from tests.peers import Peer, free_port

pytestmark = pytest.mark.integration

SHOP = "https://shop.example.ir"
SECRET = "integration-shop-secret"
INBOXES = [
    {
        "id": "shop",
        "team": "پشتیبانی فروشگاه",
        "allowed_origins": [SHOP],
        "secret_env": "OMNIHUB_TEST_SHOP_SECRET",
        "visitor_burst": 4,
        "visitor_rate": 6,
        "max_text_chars": 200,
        "upload_max_bytes": 4096,
    },
]
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(200))


@dataclass
class Chat:
    settings: Settings
    store: Store
    publisher: KafkaPublisher
    broker: Peer
    connector: WebchatConnector
    workdir: Path

    @property
    def url(self) -> str:
        return self.settings.webchat_url


@pytest.fixture
async def chat(tmp_path: Path, mongo_url: str) -> AsyncIterator[Chat]:
    os.environ["OMNIHUB_TEST_SHOP_SECRET"] = SECRET
    broker = tansu_on(tmp_path, free_port())
    db = f"w_{uuid.uuid4().hex[:10]}"
    settings = Settings(
        kafka_bootstrap=f"127.0.0.1:{broker.port}",
        kafka_idempotence=False,
        kafka_session_timeout=2.0,  # tansu holds a group join for half of it
        kafka_heartbeat_interval=0.5,
        mongo_uri=mongo_url,
        mongo_db=db,
        data_dir=tmp_path / "data",
        webchat_port=free_port(),
        webchat_inboxes=json.dumps(INBOXES),
        webchat_visitor_key="integration-visitor-key-0123456789",
        webchat_outbound_group=f"webchat-out-{db}",
        webchat_ack_timeout=2.0,
        webchat_max_connections_per_ip=6,
        webchat_send_queue=4,
        webchat_max_frame_bytes=8192,
    )
    await create_topics(settings)
    store = connect(mongo_url, db)
    await ensure_indexes(store)
    publisher = KafkaPublisher(settings.bootstrap, idempotence=False, client_id="test-webchat")
    await publisher.start()
    connector = WebchatConnector(
        publisher,
        store,
        settings,
        configured_inboxes(settings),
        Signer(settings.resolve_webchat_visitor_key()),
    )
    await connector.start()
    chat = Chat(settings, store, publisher, broker, connector, tmp_path)
    yield chat
    await connector.stop()
    await publisher.stop()
    await store.client.drop_database(db)
    await store.close()
    broker.stop()
    chat.broker.stop()  # a test may have restarted it
    del os.environ["OMNIHUB_TEST_SHOP_SECRET"]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class Widget:
    """What widget.js does on the wire, with every frame it received kept."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.welcome: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []

    @classmethod
    async def open(
        cls,
        chat: Chat,
        http: aiohttp.ClientSession,
        *,
        visitor: str | None = None,
        inbox: str = "shop",
        origin: str = SHOP,
        **hello: Any,
    ) -> Widget:
        ws = await http.ws_connect(f"{chat.url}/ws?inbox={inbox}", headers={"Origin": origin})
        w = cls(ws)
        await ws.send_json({"type": "hello", "visitor": visitor, **hello})
        w.welcome = await w.next("welcome")
        w.history = (await w.next("history"))["items"]
        return w

    @property
    def token(self) -> str:
        return str(self.welcome["visitor"])

    async def next(self, kind: str | None = None, timeout: float = 10.0) -> dict[str, Any]:
        """The next frame (of ``kind``), skipping others (they stay in ``frames``)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {kind or 'frame'} within {timeout}s; got {self.frames}")
            msg = await self.ws.receive(timeout=left)
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise AssertionError(f"socket ended ({msg.type}, {msg.data}) waiting for {kind}")
            frame = json.loads(msg.data)
            self.frames.append(frame)
            if kind is None or frame["type"] == kind:
                return frame

    async def say(
        self, text: str | None, client_id: str | None = None, **kw: Any
    ) -> dict[str, Any]:
        cid = client_id or str(uuid.uuid4())
        await self.ws.send_json({"type": "message", "client_id": cid, "text": text, **kw})
        while True:
            frame = await self.next()
            if frame["type"] in ("ack", "error") and frame.get("client_id") in (cid, None):
                return frame


async def raw_records(
    bootstrap: str,
    topic: str,
    count: int = 1,
    timeout: float = 15.0,
    cond: Callable[[list[dict[str, Any]]], bool] | None = None,
) -> list[Any]:
    """Records of ``topic`` from the beginning (every partition), once there are ``count`` or
    ``cond`` holds for their decoded values. No consumer group: no group join to wait for."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=100
    )
    await consumer.start()
    try:
        await consumer.topics()
        parts = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond(decoded(out)) if cond else len(out) >= count:
                return out
            for recs in (await consumer.getmany(timeout_ms=200)).values():
                out += recs
        raise AssertionError(f"{topic}: {len(out)} records, not what was awaited: {decoded(out)}")
    finally:
        await consumer.stop()


def decoded(records: list[Any]) -> list[dict[str, Any]]:
    out = []
    for r in records:
        try:
            out.append(json.loads(r.value))
        except ValueError:
            out.append({"type": None, "raw": r.value})
    return out


async def read(chat: Chat, topic: str, count: int = 1, **kw: Any) -> list[dict[str, Any]]:
    return decoded(await raw_records(chat.settings.bootstrap, topic, count, **kw))


async def ingest(chat: Chat, count: int) -> None:
    """What the pipeline worker does with the inbound topic (in process: no Faust start-up)."""
    records = await raw_records(chat.settings.bootstrap, topics.INBOUND, count)
    ingestor = Ingestor(chat.store, chat.publisher)
    await ingestor.process(
        [RawRecord(r.topic, r.partition, r.offset, r.key, r.value) for r in records]
    )


def webchat_messages(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in data_of(records, c.MESSAGE_RECEIVED) if m["channel"] == "webchat"]


# ---------------------------------------------------------------------------- the socket
async def test_an_ack_comes_only_after_kafka_acknowledged_and_not_while_it_is_down(
    chat: Chat, http: aiohttp.ClientSession
) -> None:
    w = await Widget.open(chat, http)
    assert w.welcome["new"] is True and w.welcome["title"] == "پشتیبانی فروشگاه"
    assert w.welcome["limits"]["text"] == 200 and w.history == []
    ack = await w.say("سلام، سفارشم کی می‌رسه؟", client_id="first-message-1")
    assert ack["type"] == "ack" and ack["client_id"] == "first-message-1"
    # the acked event is on Kafka under the id the widget got
    records = await read(chat, topics.INBOUND)
    assert [r["id"] for r in records] == [ack["id"]]
    (m,) = webchat_messages(records)
    assert m["sender"] == [
        {"kind": "webchat", "value": w.welcome["visitor_id"], "assurance": "channel"}
    ]
    assert m["thread"] == w.welcome["session"] and m["account"] == "shop"
    chat.broker.stop()
    t0 = time.monotonic()
    down = await w.say("هنوز هستید؟", client_id="while-down-1")
    assert down == {
        "type": "error",
        "code": "unavailable",
        "client_id": "while-down-1",
        "retry": True,
        "message": down["message"],
    }
    assert time.monotonic() - t0 < 6  # told to retry within the ack timeout, not left hanging
    assert not [f for f in w.frames if f["type"] == "ack" and f["client_id"] == "while-down-1"]
    # the socket is still usable, and once Kafka is back the widget's retry is acked
    await w.ws.send_json({"type": "ping"})
    assert (await w.next("pong"))["type"] == "pong"
    chat.broker = tansu_on(chat.workdir, chat.broker.port)
    await create_topics(chat.settings)
    for _ in range(20):
        retry = await w.say("هنوز هستید؟", client_id="while-down-1")
        if retry["type"] == "ack":
            break
        await asyncio.sleep(0.5)
    assert retry["type"] == "ack" and retry["client_id"] == "while-down-1"


async def test_origins_inboxes_and_the_per_address_cap(
    chat: Chat, http: aiohttp.ClientSession
) -> None:
    for headers, status, code in [
        ({"Origin": "https://evil.example"}, 403, "origin_not_allowed"),
        ({}, 403, "origin_not_allowed"),
        ({"Origin": "https://shop.example.ir.evil.example"}, 403, "origin_not_allowed"),
    ]:
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await http.ws_connect(f"{chat.url}/ws?inbox=shop", headers=headers)
        assert err.value.status == status
        async with http.get(f"{chat.url}/ws?inbox=shop", headers=headers) as r:
            assert (await r.json())["error"]["code"] == code
    async with http.get(f"{chat.url}/ws?inbox=nope", headers={"Origin": SHOP}) as r:
        assert r.status == 404 and (await r.json())["error"]["field"] == "inbox"
    socks = [await Widget.open(chat, http) for _ in range(6)]
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await http.ws_connect(f"{chat.url}/ws?inbox=shop", headers={"Origin": SHOP})
    assert err.value.status == 429
    await socks[0].ws.close()
    await until(lambda: len(chat.connector.tabs) == 5, 5, "the closed socket to be forgotten")
    again = await Widget.open(chat, http)  # a slot is free again
    assert again.welcome["type"] == "welcome"


async def test_rate_limits_and_size_limits_answer_errors_and_keep_the_socket(
    chat: Chat, http: aiohttp.ClientSession
) -> None:
    w = await Widget.open(chat, http)
    acks = [await w.say(f"پیام {i}") for i in range(4)]  # the burst
    assert [a["type"] for a in acks] == ["ack"] * 4
    limited = await w.say("یکی دیگر", client_id="over-the-limit")
    assert limited["code"] == "rate_limited" and limited["retry"] is True
    assert limited["client_id"] == "over-the-limit" and 1 <= limited["retry_after"] <= 10
    # the same visitor in another tab shares the budget
    other_tab = await Widget.open(chat, http, visitor=w.token)
    assert (await other_tab.say("از زبانهٔ دیگر"))["code"] == "rate_limited"
    # a message over the inbox's limit: named, not stored, the socket stays
    fresh = await Widget.open(chat, http)
    big = await fresh.say("ب" * 201, client_id="too-long-0001")
    assert big["code"] == "too_large" and big["field"] == "text" and big["retry"] is False
    assert (await fresh.say("ب" * 200))["type"] == "ack"  # at the limit: fine
    bad = await fresh.say("x", client_id="no")
    assert bad["code"] == "invalid_field" and bad["field"] == "client_id"
    await fresh.ws.send_str("{not json")
    assert (await fresh.next("error"))["code"] == "invalid_frame"
    await fresh.ws.send_json({"type": "hello"})
    assert (await fresh.next("error"))["code"] == "invalid_frame"
    # a frame beyond the transport limit (8 KiB here) ends the socket with 1009
    await fresh.ws.send_str(
        json.dumps({"type": "message", "client_id": "huge-frame-1", "text": "x" * 10_000})
    )
    msg = await fresh.ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1009


async def test_the_first_frame_must_be_hello(chat: Chat, http: aiohttp.ClientSession) -> None:
    ws = await http.ws_connect(f"{chat.url}/ws?inbox=shop", headers={"Origin": SHOP})
    await ws.send_json({"type": "message", "client_id": "early-message", "text": "hi"})
    err = await ws.receive_json(timeout=5)
    assert err["code"] == "hello_required"
    assert (await ws.receive(timeout=5)).type == aiohttp.WSMsgType.CLOSE


async def test_a_resend_after_reconnect_is_one_event_and_history_comes_back(
    chat: Chat, http: aiohttp.ClientSession
) -> None:
    w = await Widget.open(chat, http)
    first = await w.say("سفارش ۱۲۳۴ کجاست؟", client_id="offline-queued-1")
    token = w.token
    await w.ws.close()  # the ack was "lost": the widget resends after reconnecting
    back = await Widget.open(chat, http, visitor=token, session=w.welcome["session"])
    assert back.welcome["visitor_id"] == w.welcome["visitor_id"] and back.welcome["new"] is False
    again = await back.say("سفارش ۱۲۳۴ کجاست؟", client_id="offline-queued-1")
    assert again["id"] == first["id"]
    await ingest(chat, 2)  # both copies reach the pipeline
    docs = [d async for d in chat.store.interactions.find({})]
    assert [d["_id"] for d in docs] == [first["id"]]
    # a reload: the history has it once, with the client id the widget uses to match it
    reload = await Widget.open(chat, http, visitor=token)
    assert [(i["id"], i["client_id"], i["text"]) for i in reload.history] == [
        (first["id"], "offline-queued-1", "سفارش ۱۲۳۴ کجاست؟")
    ]
    # a made-up token is a new, empty visitor, never someone's history
    forged = token.split(".")[0][:-1] + "x." + token.split(".", 1)[1]
    stranger = await Widget.open(chat, http, visitor=forged)
    assert stranger.welcome["new"] is True and stranger.history == []


async def test_signed_identity_is_channel_assured_a_forged_one_is_refused_and_not_used(
    chat: Chat, http: aiohttp.ClientSession
) -> None:
    good = {
        "user_id": "42",
        "email": "ali@example.ir",
        "name": "علی رضایی",
        "hash": identity_hash(SECRET.encode(), "42", "ali@example.ir"),
    }
    anon = await Widget.open(chat, http)
    signed = await Widget.open(chat, http, visitor=anon.token, identity=good)
    # an anonymous visitor signing in keeps their chat
    assert signed.welcome["identity"] == "signed" and signed.welcome["new"] is False
    assert signed.welcome["visitor_id"] == anon.welcome["visitor_id"]
    await signed.say("من وارد شدم")
    forged = {**good, "user_id": "43"}
    liar = await Widget.open(chat, http, identity=forged)
    err = next(f for f in liar.frames if f["type"] == "error")
    assert err["code"] == "identity_invalid" and err["field"] == "identity.hash"
    assert liar.welcome["identity"] == "anonymous"
    await liar.say("من علی هستم")
    records = await read(chat, topics.INBOUND, 2)
    by_text = {m["text"]: m for m in webchat_messages(records)}
    assert [(s["kind"], s["value"], s["assurance"]) for s in by_text["من وارد شدم"]["sender"]] == [
        ("webchat", anon.welcome["visitor_id"], "channel"),
        ("api", "42", "channel"),
        ("email", "ali@example.ir", "channel"),
    ]
    assert by_text["من وارد شدم"]["display_name"] == "علی رضایی"
    assert [s["kind"] for s in by_text["من علی هستم"]["sender"]] == ["webchat"]
    # another user signing in on the same browser gets a new visitor, not Ali's chat
    sara = {"user_id": "7", "email": "", "hash": identity_hash(SECRET.encode(), "7", "")}
    other = await Widget.open(chat, http, visitor=signed.token, identity=sara)
    assert (
        other.welcome["new"] is True and other.welcome["visitor_id"] != anon.welcome["visitor_id"]
    )
    # and so does the page once Ali logged out (no identity, a token bound to Ali)
    out = await Widget.open(chat, http, visitor=signed.token)
    assert out.welcome["new"] is True


async def test_history_is_the_visitors_own_chat_even_when_customers_are_merged(
    chat: Chat, http: aiohttp.ClientSession
) -> None:
    good = {"user_id": "42", "hash": identity_hash(SECRET.encode(), "42", "")}
    phone = await Widget.open(chat, http, identity=good)
    laptop = await Widget.open(chat, http, identity=good)
    await phone.say("از گوشی")
    await laptop.say("از لپ‌تاپ")
    await ingest(chat, 2)
    customers = {d["customer_id"] async for d in chat.store.interactions.find({})}
    assert len(customers) == 1  # one person, signed in on two devices: one customer
    again = await Widget.open(chat, http, visitor=phone.token, identity=good)
    assert [i["text"] for i in again.history] == ["از گوشی"]


async def test_profile_frames_add_claimed_identifiers(
    chat: Chat, http: aiohttp.ClientSession
) -> None:
    w = await Widget.open(chat, http, profile={"name": "Maryam", "email": "not an email"})
    err = next(f for f in w.frames if f["type"] == "error")
    assert err["field"] == "profile.email"
    await w.ws.send_json({"type": "profile", "name": "مریم", "phone": "۰۹۱۲ ۳۴۵ ۶۷۸۹"})
    assert (await w.next("profile"))["ok"] is True
    await w.say("سلام")
    (m,) = webchat_messages(await read(chat, topics.INBOUND))
    assert [(s["kind"], s["assurance"]) for s in m["sender"]] == [
        ("webchat", "channel"),
        ("phone", "claimed"),
    ]
    assert m["display_name"] == "مریم"


# ---------------------------------------------------------------------------- outbound
def a_reply(visitor_id: str, n: int = 1, text: str = "سلام، فردا می‌رسد.", **kw: Any) -> c.Reply:
    return c.Reply.model_validate(
        {
            "reply_id": f"reply-{n}-{uuid.uuid4().hex[:6]}",
            "conversation_id": "conv-1",
            "customer_id": "cust-1",
            "agent_id": "agent-1",
            "channel": "webchat",
            "account": "shop",
            "thread": "s-thread-1",
            "to": [f"webchat:{visitor_id}"],
            "text": text,
            "requested_at": c.utcnow(),
            **kw,
        }
    )


async def publish_outbound(chat: Chat, *values: bytes) -> None:
    await chat.publisher.publish([Record(topics.outbound("webchat"), b"cust-1", v) for v in values])


def event(data: Any, type_: str) -> bytes:
    return c.envelope(type_, data, id=str(uuid.uuid4()), source="/test").to_json()


async def test_a_reply_reaches_every_open_tab_and_lands_on_the_timeline(
    chat: Chat, http: aiohttp.ClientSession
) -> None:
    fanout = LiveFanout(chat.connector, chat.settings)
    recorder = ReplyRecorder(chat.connector, chat.publisher, chat.store, chat.settings)
    await fanout.start()
    await recorder.start()
    try:
        one = await Widget.open(chat, http)
        two = await Widget.open(chat, http, visitor=one.token)
        bystander = await Widget.open(chat, http)
        ask = await one.say("کی می‌رسه؟", client_id="question-0001")
        echo = await two.next("message")  # the visitor's other tab shows what the first sent
        assert (echo["direction"], echo["id"], echo["client_id"]) == (
            "in",
            ask["id"],
            "question-0001",
        )
        reply = a_reply(one.welcome["visitor_id"])
        await publish_outbound(chat, event(reply, c.REPLY_REQUESTED))
        got = [await one.next("message"), await two.next("message")]
        status = await read(
            chat,
            topics.CUSTOMER_EVENTS,
            cond=lambda r: any(d["reply_id"] == reply.reply_id for d in data_of(r, c.REPLY_STATUS)),
        )
        assert [g["text"] for g in got] == [reply.text] * 2
        assert got[0]["id"] == got[1]["id"] and got[0]["direction"] == "out"
        assert not [f for f in bystander.frames if f["type"] == "message"]
        (st,) = data_of(status, c.REPLY_STATUS)
        assert st["status"] == "sent" and st["channel"] == "webchat"
        # recorded on the inbound topic like email's sent copies: on the timeline after ingest
        await ingest(chat, 2)
        later = await Widget.open(chat, http, visitor=one.token)  # a tab opened afterwards
        assert [(i["direction"], i["text"]) for i in later.history] == [
            ("in", "کی می‌رسه؟"),
            ("out", reply.text),
        ]
        assert later.history[1]["id"] == got[0]["id"]  # the widget dedupes live vs history
        # agent typing reaches the tabs too
        typing = c.Typing.model_validate(
            {
                "channel": "webchat",
                "account": "shop",
                "thread": "s-thread-1",
                "who": "agent",
                "state": "start",
                "identifier": f"webchat:{one.welcome['visitor_id']}",
                "at": c.utcnow(),
            }
        )
        await publish_outbound(chat, event(typing, c.CONVERSATION_TYPING))
        assert (await later.next("typing")) == {"type": "typing", "who": "agent", "state": "start"}
    finally:
        await recorder.stop()
        await fanout.stop()


async def test_bad_outbound_records_are_dead_lettered_and_the_consumer_goes_on(
    chat: Chat, http: aiohttp.ClientSession
) -> None:
    recorder = ReplyRecorder(chat.connector, chat.publisher, chat.store, chat.settings)
    fanout = LiveFanout(chat.connector, chat.settings)
    await fanout.start()
    await recorder.start()
    try:
        w = await Widget.open(chat, http)
        wrong_type = event(
            c.ReplyStatus.model_validate(
                {
                    "reply_id": "r",
                    "conversation_id": "c",
                    "customer_id": "u",
                    "channel": "webchat",
                    "status": "sent",
                    "at": c.utcnow(),
                }
            ),
            c.REPLY_STATUS,
        )
        no_inbox = a_reply(w.welcome["visitor_id"], 2, account="gone")
        good = a_reply(w.welcome["visitor_id"], 3, text="این یکی درست است")
        await publish_outbound(
            chat,
            b"\xff not json",
            wrong_type,
            event(no_inbox, c.REPLY_REQUESTED),
            event(good, c.REPLY_REQUESTED),
        )
        letters = data_of(await read(chat, topics.DEADLETTER, 2))
        statuses = data_of(
            await read(
                chat, topics.CUSTOMER_EVENTS, cond=lambda r: len(data_of(r, c.REPLY_STATUS)) >= 2
            ),
            c.REPLY_STATUS,
        )
        assert {d["stage"] for d in letters} == {"webchat.send"}
        assert {base64.b64decode(d["value_b64"]) for d in letters} == {b"\xff not json", wrong_type}
        assert {(s["reply_id"], s["status"]) for s in statuses} == {
            (no_inbox.reply_id, "failed"),
            (good.reply_id, "sent"),
        }
        assert (await w.next("message"))["text"] == "این یکی درست است"
        assert not recorder.crashed and not fanout.crashed
    finally:
        await recorder.stop()
        await fanout.stop()


async def test_visitor_typing_reaches_the_customer_event_stream(
    chat: Chat, http: aiohttp.ClientSession
) -> None:
    w = await Widget.open(chat, http)
    await w.ws.send_json({"type": "typing", "state": "start"})  # no conversation yet: dropped
    await w.say("سلام")
    await ingest(chat, 1)
    conv = await chat.store.conversations.find_one({})
    assert conv is not None
    await w.ws.send_json({"type": "typing", "state": "start"})
    await w.ws.send_json({"type": "typing", "state": "start"})  # within 2 s: coalesced
    await w.ws.send_json({"type": "typing", "state": "stop"})
    await read(
        chat, topics.CUSTOMER_EVENTS, cond=lambda r: len(data_of(r, c.CONVERSATION_TYPING)) >= 2
    )
    await asyncio.sleep(0.5)  # a third signal, if any, would be there by now
    recs = await read(
        chat, topics.CUSTOMER_EVENTS, cond=lambda r: len(data_of(r, c.CONVERSATION_TYPING)) >= 2
    )
    signals = data_of(recs, c.CONVERSATION_TYPING)
    assert [s["state"] for s in signals] == ["start", "stop"]
    assert {s["conversation_id"] for s in signals} == {conv["_id"]}
    assert signals[0]["who"] == "visitor" and signals[0]["customer_id"] == conv["customer_id"]
    assert all(
        r["subject"] == conv["customer_id"] for r in recs if r["type"] == c.CONVERSATION_TYPING
    )


# ---------------------------------------------------------------------------- uploads
async def upload(
    chat: Chat,
    http: aiohttp.ClientSession,
    token: str,
    data: bytes,
    type_: str,
    name: str = "رسید.png",
    origin: str = SHOP,
) -> tuple[int, dict[str, Any]]:
    form = aiohttp.FormData()
    form.add_field("visitor", token)
    form.add_field("file", data, filename=name, content_type=type_)
    async with http.post(
        f"{chat.url}/upload?inbox=shop", data=form, headers={"Origin": origin}
    ) as r:
        body = await r.json()
        if r.status == 201:
            assert r.headers["Access-Control-Allow-Origin"] == origin
        return r.status, body


async def test_uploads_are_checked_stored_and_sent_as_attachments(
    chat: Chat, http: aiohttp.ClientSession
) -> None:
    w = await Widget.open(chat, http)
    status, body = await upload(chat, http, w.token, PNG, "image/png")
    assert status == 201, body
    att = body["attachment"]
    assert (att["type"], att["size"], att["name"]) == ("image/png", len(PNG), "رسید.png")
    assert await blobs.get(chat.store, att["sha256"]) == PNG
    async with http.get(att["url"]) as r:
        assert r.status == 200 and await r.read() == PNG
        assert r.headers["Content-Type"] == "image/png"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
    async with http.get(att["url"].replace(w.welcome["visitor_id"], "someone-else-entirely")) as r:
        assert r.status == 403  # the link is signed for this visitor
    ack = await w.say(None, attachments=[att])
    assert ack["type"] == "ack"
    (m,) = webchat_messages(await read(chat, topics.INBOUND))
    assert (
        m["attachments"][0]["sha256"] == att["sha256"]
        and m["attachments"][0]["ref"] == att["sha256"]
    )
    # someone else's receipt cannot be attached
    other = await Widget.open(chat, http)
    stolen = await other.say(None, attachments=[att])
    assert stolen["code"] == "invalid_field" and stolen["field"] == "attachments.0.token"
    for data, type_, origin, token, code in [
        (b"<html><script>alert(1)</script>", "image/png", SHOP, w.token, 415),
        (b"GIF89a" + bytes(10), "image/gif", SHOP, w.token, 201),
        (b"\x89PNG\r\n\x1a\n" + bytes(5000), "image/png", SHOP, w.token, 413),
        (PNG, "image/png", "https://evil.example", w.token, 403),
        (PNG, "image/png", SHOP, "forged.token.x", 401),
    ]:
        status, body = await upload(chat, http, token, data, type_, origin=origin)
        assert status == code, body


# ---------------------------------------------------------------------------- backpressure
async def raw_widget(port: int, visitor: str) -> asyncio.StreamWriter:
    """A browser that connects, says hello, then never reads again."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=4096)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /ws?inbox=shop HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Origin: {SHOP}\r\n\r\n"
        ).encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert b" 101 " in head.split(b"\r\n", 1)[0], head
    payload = json.dumps({"type": "hello", "visitor": visitor}).encode()
    mask = os.urandom(4)
    writer.write(
        bytes([0x81, 0x80 | len(payload)])
        + mask
        + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    )
    await writer.drain()
    return writer  # and nothing ever reads from ``reader`` again


async def test_a_reader_that_does_not_read_is_dropped_and_never_slows_the_others(
    chat: Chat, http: aiohttp.ClientSession
) -> None:
    slow_visitor = await Widget.open(chat, http)
    slow = await raw_widget(chat.settings.webchat_port, slow_visitor.token)
    await slow_visitor.ws.close()
    fast = await Widget.open(chat, http)
    vid = slow_visitor.welcome["visitor_id"]
    await until(lambda: len(chat.connector.tabs.of("shop", vid)) == 1, 5, "the raw socket's tab")
    (tab,) = chat.connector.tabs.of("shop", vid)
    big = "ب" * 200_000  # ~400 KB a frame: the socket buffers fill after a few
    t0 = time.monotonic()
    for n in range(60):
        chat.connector.deliver_reply(a_reply(vid, n, text=big), {vid: f"id-{n}"})
        if tab.dropped:
            break
        await asyncio.sleep(0.01)
    assert tab.dropped, "the reader that never reads was not dropped"
    # meanwhile, a visitor who reads gets their reply at once
    fid = fast.welcome["visitor_id"]
    chat.connector.deliver_reply(a_reply(fid, 99, text="به‌موقع"), {fid: "id-fast"})
    assert (await fast.next("message", timeout=2))["text"] == "به‌موقع"
    assert time.monotonic() - t0 < 10
    await until(lambda: not chat.connector.tabs.of("shop", vid), 5, "the dropped tab to go")
    slow.close()

"""I/O of the web chat channel: the widget's WebSocket, uploads, the widget script and a demo.

One aiohttp server (``omnihub connector webchat``, port ``OMNIHUB_WEBCHAT_PORT``):

* ``GET /ws?inbox=<id>`` — the widget's socket. The page's ``Origin`` must be allowed for the
  inbox (else 403); one address holds at most ``webchat_max_connections_per_ip`` sockets (else
  429). A visitor message is answered ``ack`` only after Kafka acknowledged it, ``error`` with
  ``retry: true`` otherwise; rate limits per visitor and per address answer ``error`` and keep
  the socket open.
* ``POST /upload?inbox=<id>`` — a file or image (multipart: ``visitor`` token, ``file``),
  checked for size and type (by its bytes), stored in GridFS; answers an upload receipt that a
  ``message`` frame then carries.
* ``GET /files/<sha256>?…`` — a blob of the visitor's own chat, behind a signed link.
* ``GET /widget.js``, ``GET /demo``, ``GET /healthz``, ``GET /metrics``.

Agent replies and agent typing come from :mod:`connectors.webchat.send`, which calls
:meth:`WebchatConnector.deliver_reply` / :meth:`deliver_typing` to push them to every open tab
of the visitor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import resource
import signal
import time
from collections.abc import Sequence
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from pymongo.errors import PyMongoError

from connectors.base import Connector
from connectors.errors import UpstreamUnavailable
from connectors.webchat import pages
from connectors.webchat.config import ConfigError, Inbox, load_inboxes, origin_of
from connectors.webchat.limits import RateLimiter
from connectors.webchat.parse import (
    FrameError,
    Hello,
    build_message,
    decode,
    file_link,
    history_item,
    parse_hello,
    parse_message,
    parse_profile,
    parse_typing,
    verify_identity,
)
from connectors.webchat.tabs import Tab, Tabs
from connectors.webchat.tokens import Signer, new_session_id, new_visitor_id
from hub.heap import freeze_startup
from hub.settings import Settings
from hub.web import error_response, json_response
from pipeline import contract as c
from pipeline import topics
from pipeline.publish import KafkaPublisher, Publisher, Record
from store import conversations, identities, interactions
from store.mongo import Store, connect, ensure_indexes, wait_ready

log = logging.getLogger("omnihub.webchat")

FRAMES = Counter("omnihub_webchat_frames_total", "frames from widgets", ["type", "outcome"])
REFUSED = Counter("omnihub_webchat_refused_total", "widget connections refused", ["reason"])
ACK_SECONDS = Histogram(
    "omnihub_webchat_ack_seconds",
    "visitor message received → acknowledged by Kafka",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
HELLO_TIMEOUT = 15.0
TYPING_EVERY = 2.0  # a typing "start" is passed on at most this often per tab
CONVERSATION_TTL = 30.0  # seconds a tab remembers its conversation for typing signals
MAX_TYPING_TASKS = 500


class WebchatConnector(Connector):
    channel = "webchat"

    def __init__(
        self,
        publisher: Publisher,
        store: Store,
        settings: Settings,
        inboxes: Sequence[Inbox],
        signer: Signer,
    ) -> None:
        super().__init__(publisher)
        self.store = store
        self.settings = settings
        self.inboxes = {i.id: i for i in inboxes}
        self.signer = signer
        self.tabs = Tabs()
        self.limiter = RateLimiter()
        self.ack_timeout = settings.webchat_ack_timeout
        self._runner: web.AppRunner | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ the server
    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_get("/ws", self.socket)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", _metrics)
        pages.add_routes(app, self)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.settings.host, self.settings.webchat_port).start()
        self._sweeper = asyncio.create_task(self._sweep_limits())
        log.info(
            "webchat.listening addr=%s:%d inboxes=%d",
            self.settings.host,
            self.settings.webchat_port,
            len(self.inboxes),
        )

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        await asyncio.gather(
            *(t.close(WSCloseCode.GOING_AWAY, b"server stopping") for t in self.tabs.all()),
            return_exceptions=True,
        )
        for task in list(self._background):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _sweep_limits(self) -> None:
        while True:
            await asyncio.sleep(60)
            burst = max((i.visitor_burst for i in self.inboxes.values()), default=1)
            rate = min((i.visitor_rate for i in self.inboxes.values()), default=1.0)
            self.limiter.sweep(time.monotonic(), rate=rate, burst=burst)

    async def healthz(self, request: web.Request) -> web.Response:
        try:
            await self.store.ping()
        except PyMongoError as exc:
            return json_response(
                {"status": "degraded", "service": "webchat", "mongo": str(exc)}, 503
            )
        return json_response({"status": "ok", "service": "webchat", "sockets": len(self.tabs)})

    def inbox_of(self, request: web.Request) -> Inbox:
        inbox = self.inboxes.get(request.query.get("inbox", "default"))
        if inbox is None:
            raise _HttpError(404, "unknown_inbox", "inbox: no such web chat inbox", "inbox")
        return inbox

    def client_ip(self, request: web.Request) -> str:
        if self.settings.webchat_forwarded_for:
            forwarded = request.headers.get("X-Forwarded-For", "")
            first = forwarded.split(",", 1)[0].strip()
            if first:
                return first
        return request.remote or "?"

    # ------------------------------------------------------------------ the socket
    async def socket(self, request: web.Request) -> web.StreamResponse:
        try:
            inbox = self.inbox_of(request)
        except _HttpError as exc:
            return exc.response()
        if not inbox.origin_allowed(request.headers.get("Origin")):
            REFUSED.labels("origin").inc()
            return error_response(
                403, "origin_not_allowed", "this page's origin may not use this chat inbox"
            )
        ip = self.client_ip(request)
        if not self.tabs.connect_ip(ip, self.settings.webchat_max_connections_per_ip):
            REFUSED.labels("per_ip").inc()
            return error_response(429, "too_many_connections", "too many chat connections")
        tab: Tab | None = None
        try:
            ws = web.WebSocketResponse(
                heartbeat=self.settings.webchat_heartbeat,
                max_msg_size=self.settings.webchat_max_frame_bytes,
                compress=False,  # a zlib context per socket costs more memory than it saves
            )
            await ws.prepare(request)
            tab = await self._hello(ws, request, inbox, ip)
            if tab is None:
                return ws
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_frame(tab, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    tab.push(_error(FrameError("invalid_frame", "send JSON text frames")))
        finally:
            self.tabs.disconnect_ip(ip)
            if tab is not None:
                self.tabs.remove(tab)
                if tab.typing == "start":
                    self._spawn_typing(tab, "stop")
        return ws

    async def _hello(
        self, ws: web.WebSocketResponse, request: web.Request, inbox: Inbox, ip: str
    ) -> Tab | None:
        """The first frame must be ``hello``: who the visitor is; answered ``welcome`` and the
        visitor's history."""
        try:
            msg = await ws.receive(timeout=HELLO_TIMEOUT)
        except TimeoutError:
            await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"hello expected")
            return None
        if msg.type != WSMsgType.TEXT:
            return None
        try:
            frame = decode(msg.data)
            if frame["type"] != "hello":
                raise FrameError("hello_required", "the first frame must be hello", "type")
            hello = parse_hello(frame)
        except FrameError as exc:
            FRAMES.labels("hello", exc.code).inc()
            await ws.send_str(_dumps(_error(exc)))
            await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"hello expected")
            return None
        tab, notes, fresh = self._visitor(ws, request, inbox, ip, hello)
        self.tabs.add(tab)
        FRAMES.labels("hello", "ok").inc()
        tab.push(
            {
                "type": "welcome",
                "visitor": self.signer.visitor_token(
                    inbox.id,
                    tab.visitor_id,
                    self.signer.binding(inbox.id, tab.identity.user_key if tab.identity else None),
                ),
                "visitor_id": tab.visitor_id,
                "session": tab.session,
                "inbox": inbox.id,
                "title": inbox.team,
                "identity": "signed" if tab.identity else "anonymous",
                "new": fresh,
                "limits": {
                    "text": inbox.max_text_chars,
                    "upload_bytes": inbox.upload_max_bytes,
                    "upload_types": list(inbox.upload_types),
                },
            }
        )
        for note in notes:
            tab.push(_error(note))
        await self._history(tab, fresh)
        return tab

    def _visitor(
        self, ws: web.WebSocketResponse, request: web.Request, inbox: Inbox, ip: str, hello: Hello
    ) -> tuple[Tab, list[FrameError], bool]:
        notes: list[FrameError] = []
        identity = profile = None
        if hello.identity is not None:
            try:
                secret = inbox.secret()
            except ConfigError as exc:
                log.error("webchat.secret_unreadable inbox=%s error=%s", inbox.id, exc)
                secret = None
            try:
                identity = verify_identity(hello.identity, secret)
            except FrameError as exc:
                log.warning("webchat.identity_rejected inbox=%s field=%s", inbox.id, exc.field)
                FRAMES.labels("hello", "identity_invalid").inc()
                notes.append(exc)
        if hello.profile is not None:
            try:
                profile = parse_profile(hello.profile, default_region=self.settings.default_region)
            except FrameError as exc:
                notes.append(exc)
        binding = self.signer.binding(inbox.id, identity.user_key if identity else None)
        known = self.signer.check_visitor(inbox.id, hello.visitor)
        # the same visitor: same signed-in user, or an anonymous one signing in now; any other
        # change of user (another login, a logout) starts a new visitor with an empty chat
        if known is not None and known[1] in (binding, ""):
            visitor_id, session, fresh = known[0], hello.session or new_session_id(), False
        else:
            visitor_id, session, fresh = new_visitor_id(), new_session_id(), True
        tab = Tab(
            ws=ws,
            request=request,
            inbox=inbox.id,
            visitor_id=visitor_id,
            session=session,
            ip=ip,
            queue_size=self.settings.webchat_send_queue,
            identity=identity,
            profile=profile,
        )
        return tab, notes, fresh

    async def _history(self, tab: Tab, fresh: bool) -> None:
        items: list[dict[str, Any]] = []
        if not fresh:
            try:
                docs = await interactions.of_sender(
                    self.store,
                    f"webchat:{tab.visitor_id}",
                    channel=self.channel,
                    account=tab.inbox,
                    limit=self.settings.webchat_history_limit,
                )
            except PyMongoError as exc:
                log.warning("webchat.history_unavailable error=%s", exc)
                tab.push(
                    {
                        "type": "error",
                        "code": "history_unavailable",
                        "retry": True,
                        "message": "the chat history cannot be read right now",
                    }
                )
                return
            items = [
                history_item(d, signer=self.signer, inbox=tab.inbox, visitor_id=tab.visitor_id)
                for d in docs
            ]
        tab.push({"type": "history", "items": items})

    async def _on_frame(self, tab: Tab, data: str) -> None:
        try:
            frame = decode(data)
            kind = frame["type"]
            if kind == "message":
                await self._on_message(tab, frame)
            elif kind == "typing":
                self._on_typing(tab, parse_typing(frame))
            elif kind == "profile":
                tab.profile = parse_profile(frame, default_region=self.settings.default_region)
                tab.push({"type": "profile", "ok": True})
            elif kind == "ping":
                tab.push({"type": "pong"})
            else:
                raise FrameError("invalid_frame", "hello was already sent on this socket", "type")
            FRAMES.labels(kind, "ok").inc()
        except FrameError as exc:
            FRAMES.labels("frame", exc.code).inc()
            tab.push(_error(exc, _client_id(data)))
        except Exception:  # a bug must cost one frame, not the visitor's socket
            log.exception("webchat.frame_bug inbox=%s", tab.inbox)
            FRAMES.labels("frame", "internal").inc()
            tab.push(
                {
                    "type": "error",
                    "code": "internal",
                    "client_id": _client_id(data),
                    "retry": True,
                    "message": "the server could not handle this frame",
                }
            )

    # ------------------------------------------------------------------ visitor messages
    async def _on_message(self, tab: Tab, frame: dict[str, Any]) -> None:
        inbox = self.inboxes[tab.inbox]
        client_id = frame.get("client_id") if isinstance(frame.get("client_id"), str) else None
        wait = self._rate(tab, inbox)
        if wait:
            FRAMES.labels("message", "rate_limited").inc()
            tab.push(
                {
                    "type": "error",
                    "code": "rate_limited",
                    "client_id": client_id,
                    "retry": True,
                    "retry_after": math.ceil(wait),
                    "message": f"too many messages; wait {math.ceil(wait)} s",
                }
            )
            return
        out = parse_message(
            frame,
            max_text=inbox.max_text_chars,
            inbox=inbox.id,
            visitor_id=tab.visitor_id,
            signer=self.signer,
        )
        now = c.utcnow()
        message = build_message(
            inbox=inbox.id,
            visitor_id=tab.visitor_id,
            session=tab.session,
            outgoing=out,
            now=now,
            identity=tab.identity,
            profile=tab.profile,
        )
        started = time.perf_counter()
        try:
            (event_id,) = await asyncio.wait_for(self.submit([message]), self.ack_timeout)
        except (UpstreamUnavailable, TimeoutError) as exc:
            FRAMES.labels("message", "unavailable").inc()
            log.warning("webchat.kafka_unavailable inbox=%s error=%s", inbox.id, exc or "timeout")
            tab.push(
                {
                    "type": "error",
                    "code": "unavailable",
                    "client_id": out.client_id,
                    "retry": True,
                    "message": "the message could not be stored yet; it will be sent again",
                }
            )
            return
        ACK_SECONDS.observe(time.perf_counter() - started)
        tab.push({"type": "ack", "client_id": out.client_id, "id": event_id, "at": now})
        if tab.typing == "start":
            self._on_typing(tab, "stop")
        others = [t for t in self.tabs.of(tab.inbox, tab.visitor_id) if t is not tab]
        if others:  # the visitor's other tabs show what this one sent
            echo = {
                "type": "message",
                "id": event_id,
                "direction": "in",
                "client_id": out.client_id,
                "text": out.text,
                "attachments": self._links(tab.inbox, tab.visitor_id, out.attachments),
                "at": now,
            }
            for other in others:
                other.push(echo)

    def _rate(self, tab: Tab, inbox: Inbox) -> float:
        now = time.monotonic()
        vkey = f"v\x1f{inbox.id}\x1f{tab.visitor_id}"
        wait = self.limiter.take(vkey, rate=inbox.visitor_rate, burst=inbox.visitor_burst, now=now)
        if wait:
            return wait
        wait = self.limiter.take(
            f"ip\x1f{inbox.id}\x1f{tab.ip}", rate=inbox.ip_rate, burst=inbox.ip_burst, now=now
        )
        if wait:
            self.limiter.give_back(vkey)
        return wait

    def _links(
        self, inbox: str, visitor_id: str, atts: Sequence[c.Attachment]
    ) -> list[dict[str, Any]]:
        base = self.settings.webchat_url
        return [
            {
                "name": a.name,
                "type": a.type,
                "size": a.size,
                "url": base + file_link(self.signer, inbox, visitor_id, a.model_dump()),
            }
            for a in atts
        ]

    # ------------------------------------------------------------------ typing
    def _on_typing(self, tab: Tab, state: str) -> None:
        now = time.monotonic()
        if state == tab.typing and (state == "stop" or now - tab.typing_at < TYPING_EVERY):
            return
        tab.typing, tab.typing_at = state, now
        self._spawn_typing(tab, state)

    def _spawn_typing(self, tab: Tab, state: str) -> None:
        if len(self._background) >= MAX_TYPING_TASKS:
            return  # a typing signal is worth nothing late: shed it under load
        task = asyncio.get_running_loop().create_task(self._publish_typing(tab, state))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _publish_typing(self, tab: Tab, state: str) -> None:
        """Visitor typing → customer-event stream (the router pushes it to the agent). One
        tab's signals go one at a time, in order (asyncio's lock is first come, first
        served, and the tasks start in the order they were made)."""
        async with tab.typing_lock:
            try:
                found = await self._conversation(tab)
                if found is None:
                    return  # no conversation yet: nobody to show it to
                customer_id, conversation_id = found
                data = c.Typing(
                    conversation_id=conversation_id,
                    customer_id=customer_id,
                    channel="webchat",
                    account=tab.inbox,
                    thread=tab.session,
                    who="visitor",
                    state=state,  # type: ignore[arg-type]
                    identifier=f"webchat:{tab.visitor_id}",
                    at=c.utcnow(),
                )
                event = c.envelope(
                    c.CONVERSATION_TYPING,
                    data,
                    id=c.deterministic_id(
                        conversation_id, "typing", tab.visitor_id, data.at.isoformat()
                    ),
                    source=self.source,
                    subject=customer_id,
                )
                await self.publisher.publish(
                    [Record(topics.CUSTOMER_EVENTS, customer_id.encode(), event.to_json())]
                )
            except Exception as exc:  # a lost typing signal is harmless: log and go on
                log.debug("webchat.typing_not_sent error=%r", exc)

    async def _conversation(self, tab: Tab) -> tuple[str, str] | None:
        now = time.monotonic()
        if tab.conversation is not None and tab.conversation[2] > now:
            return tab.conversation[0], tab.conversation[1]
        ident = f"webchat:{tab.visitor_id}"
        owner = (await identities.lookup(self.store, [ident])).get(ident)
        if owner is None:
            return None
        key = (owner, "webchat", tab.session)
        conv = (await conversations.active_for(self.store, [key])).get(key)
        if conv is None:
            return None
        tab.conversation = (owner, conv["_id"], now + CONVERSATION_TTL)
        return owner, conv["_id"]

    # ------------------------------------------------------------------ pushes from send.py
    def deliver_reply(self, reply: c.Reply, event_ids: dict[str, str]) -> int:
        """Push an agent's reply to every open tab of its visitors; returns the tabs reached."""
        reached = 0
        for visitor_id, event_id in event_ids.items():
            frame = {
                "type": "message",
                "id": event_id,
                "reply_id": reply.reply_id,
                "direction": "out",
                "text": reply.text,
                "attachments": self._links(reply.account, visitor_id, reply.attachments),
                "at": reply.requested_at,
            }
            for tab in self.tabs.of(reply.account, visitor_id):
                if tab.push(frame):
                    reached += 1
                tab.push({"type": "typing", "who": "agent", "state": "stop"})
        return reached

    def deliver_typing(self, typing: c.Typing) -> int:
        ident = typing.identifier or ""
        if not ident.startswith("webchat:"):
            return 0
        frame = {"type": "typing", "who": "agent", "state": typing.state}
        tabs = self.tabs.of(typing.account, ident.removeprefix("webchat:"))
        return sum(1 for tab in tabs if tab.push(frame))


class _HttpError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field

    def response(self, headers: dict[str, str] | None = None) -> web.Response:
        resp = error_response(self.status, self.code, self.message, self.field)
        resp.headers.update(headers or {})
        return resp


def _error(exc: FrameError, client_id: str | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", "code": exc.code, "message": str(exc)}
    if exc.field:
        frame["field"] = exc.field
    if client_id:
        frame["client_id"] = client_id
    frame["retry"] = False
    return frame


def _client_id(data: str) -> str | None:
    try:
        frame = decode(data)
    except FrameError:
        return None
    value = frame.get("client_id")
    return value if isinstance(value, str) and len(value) <= 64 else None


def _dumps(frame: dict[str, Any]) -> str:
    from hub.web import dumps

    return dumps(frame).decode()


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


# ---------------------------------------------------------------------------- the process
def configured_inboxes(settings: Settings) -> list[Inbox]:
    return load_inboxes(
        inline=settings.webchat_inboxes,
        path=settings.webchat_inboxes_file,
        own_origin=origin_of(settings.webchat_url),
    )


def _more_files() -> None:
    """Each visitor holds a socket: raise the soft limit on open files to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """`omnihub connector webchat`: widget sockets in, replies out, until SIGTERM."""
    from connectors.webchat.send import LiveFanout, ReplyRecorder

    inboxes = configured_inboxes(settings)
    _more_files()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    signer = Signer(settings.resolve_webchat_visitor_key())
    store = connect(settings.mongo_url, settings.mongo_db)
    await wait_ready(store, settings.ready_timeout)
    await ensure_indexes(store)
    publisher = KafkaPublisher(
        settings.bootstrap, idempotence=settings.idempotence, client_id="omnihub-webchat"
    )
    await publisher.start()
    connector = WebchatConnector(publisher, store, settings, inboxes, signer)
    recorder = ReplyRecorder(connector, publisher, store, settings)
    fanout = LiveFanout(connector, settings)
    recorder.on_crash = stop.set
    fanout.on_crash = stop.set
    try:
        await fanout.start()
        await recorder.start()
        freeze_startup()  # what start-up made lives on; before clients can connect
        await connector.start()
        log.info(
            "webchat.ready url=%s inboxes=%s", settings.webchat_url, ",".join(connector.inboxes)
        )
        await stop.wait()
    finally:
        log.info("webchat.stopping")
        await connector.stop()
        await fanout.stop()
        await recorder.stop()
        await publisher.stop()
        await store.close()
    if recorder.crashed or fanout.crashed:
        raise RuntimeError("the reply consumer stopped on an error (see the log); restart me")

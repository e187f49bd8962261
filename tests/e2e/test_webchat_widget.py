"""The web chat widget in a real Chromium against the whole stack from `omnihub up`.

A visitor on a shop's page (another origin than the connector) writes in Persian; an agent,
online on the agent stream, gets the offer, accepts and replies through the REST API; the
reply appears live; a reload keeps the chat; a message typed while offline is delivered once.
Screenshots of the widget in Persian and English go to tests/artifacts/ (gitignored).

Chromium is the system one (apt: chromium) driven by Playwright; if it cannot start, these
tests fail — they never skip.
"""

from __future__ import annotations

import asyncio
import struct
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import Browser, Page

from tests.e2e.browser import ARTIFACTS, chromium
from tests.e2e.test_user_story import PORT_FLAGS, Stack
from tests.peers import free_port

pytestmark = pytest.mark.e2e

QUESTION = "سلام، سفارشم کی می‌رسه؟"
ANSWER = "سلام! سفارش شما فردا به دستتان می‌رسد."
OFFLINE = "این پیام را بدون اینترنت نوشتم"
W = "#omnihub-chat"  # Playwright's CSS selectors pierce the widget's open shadow root


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("webchat") / "data", {f: free_port() for f in PORT_FLAGS})
    s.start()
    yield s
    if s.proc and s.proc.poll() is None:
        s.interrupt()


def shop_page(lang: str, widget: str) -> str:
    title = "فروشگاه کتاب" if lang == "fa" else "Book shop"
    direction = "rtl" if lang == "fa" else "ltr"
    return (
        f'<!doctype html><html lang="{lang}" dir="{direction}"><head><meta charset="utf-8">'
        f"<title>{title}</title></head><body><h1>{title}</h1>"
        f'<script src="{widget}" data-inbox="default" async></script></body></html>'
    )


@pytest.fixture(scope="module")
async def shop(stack: Stack) -> AsyncIterator[str]:
    """The host site: another origin (http://localhost:<port>) embedding the widget."""
    widget = stack.info["webchat"] + "/widget.js"

    async def page(request: web.Request) -> web.Response:
        lang = request.match_info["lang"]
        return web.Response(text=shop_page(lang, widget), content_type="text/html")

    app = web.Application()
    app.router.add_get("/{lang:fa|en}", page)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://localhost:{port}"
    await runner.cleanup()


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


class Agent:
    """An agent created by an admin through the API, logged in, online on the stream."""

    def __init__(self, http: aiohttp.ClientSession, headers: dict[str, str]) -> None:
        self.http, self.headers = http, headers
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.pushes: list[dict[str, Any]] = []
        self.taken: set[int] = set()

    async def next(self, kind: str, timeout: float = 20.0, **match: Any) -> dict[str, Any]:
        """The first push of ``kind`` (with ``match``) not returned before, waiting for it."""
        assert self.ws is not None

        def fits(push: dict[str, Any]) -> bool:
            return push.get("type") == kind and all(push.get(k) == v for k, v in match.items())

        for n, push in enumerate(self.pushes):
            if n not in self.taken and fits(push):
                self.taken.add(n)
                return push
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                push = await self.ws.receive_json(timeout=deadline - time.monotonic())
            except TimeoutError:
                break
            self.pushes.append(push)
            if fits(push):
                self.taken.add(len(self.pushes) - 1)
                return push
        raise AssertionError(f"no {kind} {match} pushed within {timeout}s; got {self.pushes}")


@pytest.fixture(scope="module")
async def agent(stack: Stack) -> AsyncIterator[Agent]:
    token = Path(stack.info["token_file"]).read_text().strip()
    base = stack.info["api"]
    async with aiohttp.ClientSession(base_url=base) as http:
        sara = {"name": "سارا", "email": "sara.webchat@example.com", "password": "sara-secret-123"}
        async with http.post(
            "/api/v1/agents", json=sara, headers={"Authorization": f"Bearer {token}"}
        ) as r:
            assert r.status == 201, await r.text()
        async with http.post("/api/v1/agents/login", json=sara) as r:
            assert r.status == 200, await r.text()
            headers = {"Authorization": f"Bearer {(await r.json())['token']}"}
        a = Agent(http, headers)
        a.ws = await http.ws_connect("/api/v1/agents/stream", headers=headers)
        assert (await a.ws.receive_json(timeout=10))["type"] == "hello"
        yield a
        await a.ws.close()


@pytest.fixture
async def admin(stack: Stack) -> AsyncIterator[aiohttp.ClientSession]:
    token = Path(stack.info["token_file"]).read_text().strip()
    async with aiohttp.ClientSession(
        base_url=stack.info["api"], headers={"Authorization": f"Bearer {token}"}
    ) as s:
        yield s


def a_png(width: int = 96, height: int = 64) -> bytes:
    """A real PNG (an orange and white stripe), built here: it has to decode in the browser."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(
        b"\x00" + (b"\xff\x88\x00" if y < height // 2 else b"\xff\xff\xff") * width
        for y in range(height)
    )
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


async def open_widget(page: Page, url: str) -> None:
    await page.goto(url)
    await page.locator(f"{W} .l").click()
    await page.wait_for_selector(f'{W} .w[data-status="online"]', timeout=20000)


async def bubbles(page: Page) -> list[tuple[str, str]]:
    """(in|out, text) of every message bubble, in order."""
    return [
        (
            "out" if "out" in (await b.get_attribute("class") or "") else "in",
            (await b.locator("span").first.text_content()) or "",
        )
        for b in await page.locator(f"{W} .m").all()
    ]


async def visitor_timeline(admin: aiohttp.ClientSession, page: Page) -> list[dict[str, Any]]:
    token = await page.evaluate("localStorage.getItem('omnihub:default:visitor')")
    visitor = token.strip('"').split(".")[0]
    async with admin.get("/api/v1/customers", params={"identifier": f"webchat:{visitor}"}) as r:
        assert r.status == 200, await r.text()
        cust = await r.json()
    async with admin.get(f"/api/v1/customers/{cust['id']}/timeline", params={"limit": 100}) as r:
        return list((await r.json())["items"])


async def test_a_visitor_chats_with_an_agent_in_persian_across_reload_and_offline(
    stack: Stack, shop: str, browser: Browser, agent: Agent, admin: aiohttp.ClientSession
) -> None:
    context = await browser.new_context(
        viewport={"width": 900, "height": 700}, locale="fa-IR", timezone_id="Asia/Tehran"
    )
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        await open_widget(page, f"{shop}/fa")
        assert await page.locator(f"{W} .w").get_attribute("dir") == "rtl"
        assert (
            await page.locator(f"{W} textarea").get_attribute("placeholder")
            == "پیام خود را بنویسید…"
        )
        # the visitor writes; the widget shows it acked (data-id = the event id)
        await page.locator(f"{W} textarea").fill(QUESTION)
        await page.locator(f"{W} textarea").press("Enter")
        sent = page.locator(f"{W} .m.in[data-id]")
        await sent.wait_for(timeout=15000)
        assert await sent.evaluate("n => getComputedStyle(n).direction") == "rtl"
        # the agent gets the offer, accepts it and replies
        offer = (await agent.next("offer"))["offer"]
        assert offer["channel"] == "webchat" and offer["preview"] == QUESTION
        conv = offer["conversation_id"]
        async with agent.http.post(
            f"/api/v1/agents/offers/{offer['id']}/accept", headers=agent.headers
        ) as r:
            assert r.status == 200, await r.text()
        # typing both ways
        await page.locator(f"{W} textarea").type("یک", delay=20)
        typing = await agent.next("typing", conversation_id=conv)
        assert typing["who"] == "visitor" and typing["state"] == "start"
        assert agent.ws is not None
        await agent.ws.send_json({"type": "typing", "conversation_id": conv, "state": "start"})
        await page.wait_for_selector(f"{W} .y:has-text('پشتیبان در حال نوشتن است')", timeout=10000)
        await page.locator(f"{W} textarea").fill("")
        async with agent.http.post(
            f"/api/v1/conversations/{conv}/typing", json={"state": "stop"}, headers=agent.headers
        ) as r:
            assert r.status == 202 and (await r.json()) == {"sent": True}
        await page.wait_for_function(
            "() => document.querySelector('#omnihub-chat').shadowRoot"
            ".querySelector('.y').textContent === ''",
            timeout=10000,
        )
        async with agent.http.post(
            f"/api/v1/conversations/{conv}/typing", json={"state": "maybe"}, headers=agent.headers
        ) as r:
            assert r.status == 400 and (await r.json())["error"]["field"] == "state"
        async with agent.http.post(
            f"/api/v1/conversations/{conv}/reply", json={"text": ANSWER}, headers=agent.headers
        ) as r:
            assert r.status == 202, await r.text()
        # the reply appears live, right-to-left, and the typing line goes away
        reply = page.locator(f"{W} .m.out", has_text=ANSWER)
        await reply.wait_for(timeout=15000)
        assert await reply.evaluate("n => getComputedStyle(n).direction") == "rtl"
        assert await page.locator(f"{W} .y").text_content() == ""
        # an image from the visitor
        await page.locator(f"{W} input[type=file]").set_input_files(
            {"name": "رسید.png", "mimeType": "image/png", "buffer": a_png()}
        )
        img = page.locator(f"{W} .m.in[data-id] img")
        await img.wait_for(timeout=15000)
        await page.wait_for_function(
            "() => { const i = document.querySelector('#omnihub-chat').shadowRoot"
            ".querySelector('.m img'); return i && i.complete && i.naturalWidth === 96; }",
            timeout=10000,
        )
        await page.screenshot(path=str(ARTIFACTS / "webchat-fa.png"))
        # a reload keeps the chat: with the widget's local copy gone, from the server's history
        image_id = await page.locator(f"{W} .m.in[data-id]:has(img)").get_attribute("data-id")
        await agent.next("message", conversation_id=conv, direction="out")
        await agent.next("message", conversation_id=conv, interaction_id=image_id)
        await page.evaluate("localStorage.removeItem('omnihub:default:cache')")
        await page.reload()
        await page.locator(f"{W} .l").click()
        await page.wait_for_selector(f'{W} .w[data-status="online"]', timeout=20000)
        await page.locator(f"{W} .m img").wait_for(timeout=10000)
        assert (await bubbles(page))[:2] == [("in", QUESTION), ("out", ANSWER)]
        # offline: the message waits in localStorage, then goes exactly once
        await context.set_offline(True)
        await page.wait_for_selector(f'{W} .w[data-status="offline"]', timeout=10000)
        await page.locator(f"{W} textarea").fill(OFFLINE)
        await page.locator(f"{W} textarea").press("Enter")
        await page.locator(f"{W} .m.q", has_text=OFFLINE).wait_for(timeout=5000)
        queued = await page.evaluate("JSON.parse(localStorage.getItem('omnihub:default:outbox'))")
        assert [m["text"] for m in queued] == [OFFLINE]
        await asyncio.sleep(1.5)  # a while offline: nothing may leave meanwhile
        await context.set_offline(False)
        await page.locator(f"{W} .m.in[data-id]", has_text=OFFLINE).wait_for(timeout=30000)
        pushed = await agent.next("message", conversation_id=conv, text=OFFLINE)
        assert await page.evaluate("localStorage.getItem('omnihub:default:outbox')") == "[]"
        # once on the timeline, and it stays once (a late duplicate would show within seconds)
        items: list[dict[str, Any]] = []
        for _ in range(50):
            items = await visitor_timeline(admin, page)
            if any(i.get("text") == OFFLINE for i in items):
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(2)
        items = await visitor_timeline(admin, page)
        assert [i["id"] for i in items if i.get("text") == OFFLINE] == [pushed["interaction_id"]]
        assert [i["text"] for i in items if i.get("text") == QUESTION] == [QUESTION]
        assert not errors, errors
    finally:
        await context.close()


async def test_the_widget_in_english_on_a_left_to_right_page(shop: str, browser: Browser) -> None:
    context = await browser.new_context(viewport={"width": 900, "height": 700}, locale="en-US")
    page = await context.new_page()
    try:
        await open_widget(page, f"{shop}/en")
        assert await page.locator(f"{W} .w").get_attribute("dir") == "ltr"
        assert await page.locator(f"{W} .h strong").text_content() == "Support"
        await page.locator(f"{W} textarea").fill("Hi, has order #1234 shipped?")
        await page.locator(f"{W} button[type=submit]").click()
        sent = page.locator(f"{W} .m.in[data-id]")
        await sent.wait_for(timeout=15000)
        assert await sent.evaluate("n => getComputedStyle(n).direction") == "ltr"
        # a Persian line on an English page still reads right-to-left, in its own bubble
        await page.locator(f"{W} textarea").fill("ممنون")
        await page.locator(f"{W} textarea").press("Enter")
        fa = page.locator(f"{W} .m.in[data-id]", has_text="ممنون")
        await fa.wait_for(timeout=15000)
        assert await fa.evaluate("n => getComputedStyle(n).direction") == "rtl"
        await page.screenshot(path=str(ARTIFACTS / "webchat-en.png"))
    finally:
        await context.close()

"""The agent console in a real Chromium against the whole stack (`omnihub up`): an agent signs
in, goes online, takes an offer, reads the timeline, replies, writes a note and resolves — in
Persian and in English — and markup sent by customers stays text.

Chromium is Debian's (/usr/bin/chromium) driven by Playwright; if it cannot start, these tests
fail (they never skip). Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import asyncio
import json
import re
import smtplib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from email.message import EmailMessage
from email.utils import formataddr
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, BrowserContext, Page, WebSocketRoute, expect

from tests.e2e.browser import ARTIFACTS, chromium
from tests.e2e.test_user_story import PORT_FLAGS, Stack
from tests.peers import free_port

pytestmark = pytest.mark.e2e

PASSWORD = "console-secret-1"
JALALI_MONTHS = "فروردین اردیبهشت خرداد تیر مرداد شهریور مهر آبان آذر دی بهمن اسفند".split()
GREGORIAN_MONTHS_FA = (
    "ژانویه فوریه مارس آوریل مه ژوئن ژوئیه اوت سپتامبر اکتبر نوامبر دسامبر".split()
)
# Each payload would set window.__xss and raise a dialog if it ever ran.
PAYLOADS = [
    "<script>window.__xss=1;alert('x1')</script>",
    "<img src=x onerror=\"window.__xss=2;alert('x2')\">",
    "<svg onload=\"window.__xss=3;alert('x3')\"><circle r=5></circle></svg>",
    "<a href=\"javascript:window.__xss=4;alert('x4')\">click me</a>",
    "</textarea><script>window.__xss=5;alert('x5')</script>",
    '"><iframe srcdoc="<script>parent.__xss=6;parent.alert(7)</script>"></iframe>',
    '<body onload="window.__xss=8"><style>*{display:none}</style>',
]
REMOTE = "198.51.100.7"  # TEST-NET-2: a remote image in a mail must not even be requested


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("console") / "data", {f: free_port() for f in PORT_FLAGS})
    s.start()
    yield s
    if s.proc and s.proc.poll() is None:
        s.interrupt()


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


class Admin:
    """The API token's side of the story: creates agents, pushes messages, checks results."""

    def __init__(self, http: aiohttp.ClientSession) -> None:
        self.http = http

    async def json(self, method: str, path: str, **kw: Any) -> Any:
        async with self.http.request(method, path, **kw) as r:
            assert r.status < 300, f"{method} {path}: {r.status} {await r.text()}"
            return await r.json()

    async def agent(self, name: str, email: str, **fields: Any) -> dict[str, Any]:
        body = {"name": name, "email": email, "password": PASSWORD, **fields}
        return dict(await self.json("POST", "/api/v1/agents", json=body))

    async def message(self, **body: Any) -> str:
        return str((await self.json("POST", "/api/v1/messages", json=body))["id"])

    async def status_of(self, agent_id: str) -> str:
        agents = (await self.json("GET", "/api/v1/agents"))["agents"]
        return str(next(a for a in agents if a["id"] == agent_id)["status"])

    async def conversation(self, conv_id: str) -> dict[str, Any]:
        return dict(await self.json("GET", f"/api/v1/conversations/{conv_id}"))

    async def timeline(self, identifier: str) -> list[dict[str, Any]]:
        cust = await self.json("GET", "/api/v1/customers", params={"identifier": identifier})
        return list((await self.json("GET", f"/api/v1/customers/{cust['id']}/timeline"))["items"])


async def until(what: str, check: Callable[[], Awaitable[Any]], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.2)


class Watch:
    """Everything a page does that would show injected script running."""

    def __init__(self, page: Page) -> None:
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.console: list[tuple[str, str, str]] = []
        self.remote: list[str] = []
        self.loaded: list[str] = []
        page.on("dialog", self._dialog)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("console", lambda m: self.console.append((m.type, m.text, m.location["url"])))
        # a blocked load may still show as a request that failed at once: keep why it failed
        page.on(
            "requestfailed",
            lambda r: self.remote.append(f"{r.url} {r.failure}") if REMOTE in r.url else None,
        )
        page.on("response", lambda r: self.loaded.append(r.url) if REMOTE in r.url else None)

    async def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        await dialog.dismiss()


class Relay:
    """Stands between the console and its agent stream: passes frames both ways, can add
    frames of its own, cut the link and refuse new ones (a network outage)."""

    def __init__(self) -> None:
        self.routes: list[WebSocketRoute] = []
        self.down = False
        self.refused = 0

    async def handle(self, ws: WebSocketRoute) -> None:
        if self.down:
            self.refused += 1
            await ws.close(code=1011, reason="down")
            return
        ws.connect_to_server()
        self.routes.append(ws)

    def push(self, frame: dict[str, Any]) -> None:
        self.routes[-1].send(json.dumps(frame))

    async def cut(self) -> None:
        await self.routes[-1].close(code=4000, reason="cut")


class Reads:
    """Counts the console's requests whose URL contains `part`, to wait until none is in
    flight or about to start (its refreshes are debounced by 250 ms)."""

    def __init__(self, page: Page, part: str) -> None:
        self.part = part
        self.inflight = 0
        self.last = time.monotonic()
        page.on("request", lambda r: self._step(r.url, 1))
        page.on("requestfinished", lambda r: self._step(r.url, -1))
        page.on("requestfailed", lambda r: self._step(r.url, -1))

    def _step(self, url: str, by: int) -> None:
        if self.part in url:
            self.inflight += by
            self.last = time.monotonic()

    async def settled(self, quiet: float = 0.6, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.inflight > 0 or time.monotonic() - self.last < quiet:
            assert time.monotonic() < deadline, f"the console kept reading {self.part}"
            await asyncio.sleep(0.05)


_CONTEXTS: list[BrowserContext] = []


@pytest.fixture(autouse=True)
async def _close_consoles() -> AsyncIterator[None]:
    """A test that fails midway must not leave its agent signed in: an online agent would take
    the offers the next test waits for."""
    yield
    while _CONTEXTS:
        await _CONTEXTS.pop().close()


async def open_console(browser: Browser, stack: Stack, locale: str) -> tuple[Page, Watch]:
    context = await browser.new_context(
        viewport={"width": 1366, "height": 768}, locale=locale, timezone_id="Asia/Tehran"
    )
    _CONTEXTS.append(context)
    # CSP violations in the console's own document would mean markup got into it
    await context.add_init_script(
        "if (window === window.top) { window.__csp = [];"
        " document.addEventListener('securitypolicyviolation',"
        " e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI)); }"
    )
    page = await context.new_page()
    watch = Watch(page)
    response = await page.goto(stack.info["console"])
    assert response is not None and response.status == 200
    return page, watch


async def sign_in(page: Page, email: str) -> None:
    await page.fill("#login-email", email)
    await page.fill("#login-password", PASSWORD)
    await page.click("#login-submit")
    await page.wait_for_selector("#conn[data-state=open]", timeout=10_000)


def shot(name: str) -> str:
    return str(ARTIFACTS / f"console_{name}.png")


# ------------------------------------------------------------------------------------------
async def test_persian_agent_from_offer_to_resolved(
    stack: Stack, browser: Browser, admin: Admin
) -> None:
    sara = await admin.agent("سارا احمدی", "sara.console@example.com")
    page, watch = await open_console(browser, stack, "fa-IR")
    assert await page.get_attribute("html", "dir") == "rtl"
    assert await page.get_attribute("html", "lang") == "fa"
    # a wrong password is a clear message, not a silent failure
    await page.fill("#login-email", "sara.console@example.com")
    await page.fill("#login-password", "wrong-password-x")
    await page.click("#login-submit")
    await page.wait_for_selector("#login-error:not([hidden])")
    assert "نادرست" in (await page.text_content("#login-error") or "")
    await sign_in(page, "sara.console@example.com")
    await page.click("[data-presence=offline]")
    await until("offline", lambda: _is(admin.status_of(sara["id"]), "offline"))
    await page.click("[data-presence=online]")
    await until("online", lambda: _is(admin.status_of(sara["id"]), "online"))

    text = "سلام، سفارشم کی می‌رسه؟"
    await admin.message(
        source_id="console-fa-1",
        sender=[{"kind": "phone", "value": "09121112233"}],
        display_name="علی رضایی",
        text=text,
    )
    offer = page.locator(".offer")
    await offer.wait_for(timeout=15_000)
    assert await offer.locator(".offer-name").text_content() == "علی رضایی"
    assert await offer.locator(".preview").text_content() == text
    assert await offer.locator("img.chan").get_attribute("src") == "/console/icons/api.svg"
    assert "ثانیه مانده" in (await offer.locator(".left").text_content() or "")
    assert (await page.title()).startswith("(۱) ")  # seen from another window's tab too
    await page.screenshot(path=shot("offer_fa"), animations="disabled")

    await page.keyboard.press("Enter")  # the offer has the focus: Enter accepts
    item = page.locator("#timeline .item.in").last
    await item.wait_for(timeout=10_000)
    assert await item.locator(".text").text_content() == text
    assert await item.locator(".text").get_attribute("dir") == "auto"
    stamp = await item.locator("time").text_content() or ""
    assert any(m in stamp for m in JALALI_MONTHS), stamp  # Jalali…
    assert any(m in stamp for m in GREGORIAN_MONTHS_FA), stamp  # …and Gregorian beside it
    assert re.search("[۰-۹]{4}", stamp), stamp
    conv_id = await page.locator(".conv-row.open").get_attribute("data-id")
    assert conv_id and (await admin.conversation(conv_id))["assignee"] == sara["id"]
    assert "+989121112233" in (await page.text_content("#customer") or "")

    reply = "فردا به دستتان می‌رسد. Tracking: IR-2048"
    await page.keyboard.press("r")
    await page.keyboard.type(reply)
    await page.keyboard.press("Control+Enter")
    await page.locator("#timeline .item.out .text", has_text="IR-2048").wait_for(timeout=15_000)
    items = await admin.timeline("phone:+989121112233")
    assert [(i["direction"], i["text"]) for i in items[:2]] == [("out", reply), ("in", text)]

    await page.keyboard.press("Escape")  # out of the reply box: letters are shortcuts again
    await page.keyboard.press("n")
    await page.keyboard.type("مشتری عجله دارد")
    await page.keyboard.press("Control+Enter")
    await page.locator("#timeline .item.note", has_text="مشتری عجله دارد").wait_for()
    notes = await admin.json("GET", f"/api/v1/conversations/{conv_id}/notes")
    assert [n["text"] for n in notes["notes"]] == ["مشتری عجله دارد"]
    await page.screenshot(path=shot("conversation_fa"), animations="disabled")
    await page.keyboard.press("Escape")
    await page.keyboard.press("?")  # the help lists the shortcuts, in Persian
    await page.wait_for_selector("#help-dialog[open]")
    assert "بستن گفتگو" in (await page.text_content("#help-keys") or "")
    await page.screenshot(path=shot("help_fa"), animations="disabled")
    await page.keyboard.press("Escape")
    await page.wait_for_selector("#help-dialog:not([open])", state="attached")

    await page.keyboard.press("e")
    await until("resolved", lambda: _is(_state(admin, conv_id), "resolved"))
    await page.locator("#conv-sub", has_text="بسته‌شده").wait_for()
    assert await page.locator("#act-reopen").is_visible()
    assert not watch.dialogs and not watch.errors, (watch.dialogs, watch.errors)
    await page.click("#logout")
    await page.wait_for_selector("#login-view:not([hidden])")
    await until("offline after logout", lambda: _is(admin.status_of(sara["id"]), "offline"))
    await page.context.close()


async def test_english_supervisor_sees_everyone_live_and_transfers_to_a_team(
    stack: Stack, browser: Browser, admin: Admin
) -> None:
    await admin.json("POST", "/api/v1/teams", json={"id": "billing", "name": "Billing"})
    await admin.agent("Boss", "boss.console@example.com", role="supervisor")
    page, watch = await open_console(browser, stack, "en-US")
    # the agent stream runs through a relay this test can cut and use to add frames
    relay = Relay()
    await page.route_web_socket(re.compile(r"/api/v1/agents/stream"), relay.handle)
    contexts = Reads(page, "/context")
    assert await page.get_attribute("html", "dir") == "ltr"
    await page.click("#login-view .lang-toggle")  # the switch works before signing in too
    assert await page.get_attribute("html", "dir") == "rtl"
    assert await page.text_content("#login-submit") == "ورود"
    await page.click("#login-view .lang-toggle")
    assert await page.get_attribute("html", "dir") == "ltr"
    await sign_in(page, "boss.console@example.com")
    assert await page.locator('[data-list="all"]').is_visible()  # supervisors see everyone

    await admin.message(
        source_id="console-en-1",
        sender=[{"kind": "email", "value": "jane@example.com"}],
        display_name="Jane Doe",
        text="Hello, my parcel is late.",
    )
    offer = page.locator(".offer")
    await offer.wait_for(timeout=15_000)
    assert "s left" in (await offer.locator(".left").text_content() or "")
    await page.screenshot(path=shot("offer_en"), animations="disabled")
    await page.keyboard.press("a")
    first = page.locator("#timeline .item.in .text", has_text="parcel is late")
    await first.wait_for(timeout=10_000)
    conv_id = await page.locator(".conv-row.open").get_attribute("data-id")
    assert conv_id
    # a new message on the open conversation appears without reloading
    await admin.message(
        source_id="console-en-2",
        sender=[{"kind": "email", "value": "jane@example.com"}],
        text="Order number is 5521.",
    )
    await page.locator("#timeline .item.in .text", has_text="5521").wait_for(timeout=15_000)
    stamp = await page.locator("#timeline .item.in time").last.text_content() or ""
    assert re.search(r"\d{1,2} [A-Z][a-z]{2} \d{4}", stamp), stamp  # Gregorian for English
    # frames the console does not know are ignored; a visitor's typing shows in one place
    relay.push({"type": "someday.new.frame", "conversation_id": conv_id})
    relay.push({"type": "typing", "conversation_id": conv_id})
    await page.locator("#typing", has_text="typing…").wait_for(timeout=5_000)
    await page.screenshot(path=shot("conversation_en"), animations="disabled")

    # the link drops: a banner says so and it retries; what arrived meanwhile shows after
    relay.down = True
    await relay.cut()
    await page.locator("#banner", has_text="Connection lost").wait_for(timeout=5_000)
    # a refresh set off by a frame that came just before the cut must not be the one that shows
    # the next message: let it finish first
    await contexts.settled()
    await admin.message(
        source_id="console-en-3",
        sender=[{"kind": "email", "value": "jane@example.com"}],
        text="Are you still there?",
    )
    await until(
        "stored", lambda: _where(admin.timeline("email:jane@example.com"), lambda i: len(i) == 3)
    )

    async def retried() -> bool:
        return relay.refused >= 1

    await until("the console to try again", retried)
    assert await page.locator("#banner").is_visible()
    assert await page.locator("#timeline .item.in .text", has_text="still there").count() == 0
    relay.down = False
    await page.wait_for_selector("#conn[data-state=open]", timeout=40_000)
    await page.wait_for_selector("#banner", state="hidden")
    await page.locator("#timeline .item.in .text", has_text="still there").wait_for(timeout=10_000)

    await page.keyboard.press("?")
    await page.wait_for_selector("#help-dialog[open]")
    assert "Resolve the conversation" in (await page.text_content("#help-keys") or "")
    await page.keyboard.press("Escape")
    await page.wait_for_selector("#help-dialog:not([open])", state="attached")

    await page.keyboard.press("t")
    await page.wait_for_selector("#transfer-dialog[open]")
    await page.check("#transfer-form input[value=team]")
    await page.select_option("#transfer-team", "billing")
    await page.fill("#transfer-note", "Needs a refund check")
    await page.screenshot(path=shot("transfer_en"), animations="disabled")
    await page.click("#transfer-form button[type=submit]")
    await page.wait_for_selector("#transfer-dialog:not([open])", state="attached")
    conv = await until(
        "transferred", lambda: _where(admin.conversation(conv_id), lambda c: c["team"] == "billing")
    )
    assert conv["assignee"] is None
    notes = (await admin.json("GET", f"/api/v1/conversations/{conv_id}/notes"))["notes"]
    assert [(n["kind"], n["text"], n["to_team"]) for n in notes] == [
        ("transfer", "Needs a refund check", "billing")
    ]
    await page.locator("#timeline .item.transfer", has_text="Needs a refund check").wait_for()
    # the supervisor's lists follow: it left "Mine" and waits in the queue
    await page.keyboard.press("2")
    await page.locator(f'#conv-list [data-id="{conv_id}"]').wait_for(timeout=10_000)

    # a form where someone typed Jane's address: a suggestion the supervisor decides in the panel
    await admin.message(
        source_id="console-en-form",
        sender=[
            {"kind": "api", "value": "form-77"},
            {"kind": "email", "value": "Jane@Example.com", "assurance": "claimed"},
        ],
        display_name="J. Doe",
        text="Please call me back.",
    )
    await page.locator(".offer .accept").wait_for(timeout=15_000)
    await page.keyboard.press("a")
    # Jane's transferred conversation is still open and its panel lists the same suggestion:
    # decide it only once the accepted conversation has replaced it on screen
    await page.locator("#timeline .item.in .text", has_text="Please call me back.").wait_for(
        timeout=10_000
    )
    suggestion = page.locator("#customer .suggestion")
    await suggestion.wait_for(timeout=10_000)
    assert "jane@example.com" in (await suggestion.text_content() or "")
    await suggestion.locator("button", has_text="Not the same").click()
    await suggestion.locator("[role=status]", has_text="different people").wait_for()
    # the panel refreshes after a decision; the outcome stays in view, without its buttons
    await page.wait_for_timeout(1_000)
    assert await suggestion.locator("[role=status]", has_text="different people").is_visible()
    assert await suggestion.locator("button").count() == 0
    rejected = (await admin.json("GET", "/api/v1/merge-suggestions?state=rejected"))["suggestions"]
    assert [x["identifier"] for x in rejected] == ["email:jane@example.com"]
    assert not watch.dialogs and not watch.errors, (watch.dialogs, watch.errors)
    await page.context.close()


async def test_markup_from_customers_stays_inert(
    stack: Stack, browser: Browser, admin: Admin
) -> None:
    async with aiohttp.ClientSession() as s, s.get(stack.info["console"]) as r:
        csp = r.headers["Content-Security-Policy"]
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Referrer-Policy"] == "no-referrer"
    for directive in (
        "default-src 'self'",
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
    ):
        assert directive in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp

    xena = await admin.agent("Xena", "xena.console@example.com")
    page, watch = await open_console(browser, stack, "en-US")
    await sign_in(page, "xena.console@example.com")

    # 1. as message text and as the customer's display name, on the api channel
    await admin.message(
        source_id="console-xss-1",
        sender=[{"kind": "api", "value": "xss-customer"}],
        display_name=PAYLOADS[1],
        text="\n".join(PAYLOADS),
    )
    await page.locator(".offer").wait_for(timeout=15_000)
    assert await page.locator(".offer .offer-name").text_content() == PAYLOADS[1]
    await page.keyboard.press("Enter")
    shown = page.locator("#timeline .item.in .text").last
    await shown.wait_for(timeout=10_000)
    assert await shown.text_content() == "\n".join(PAYLOADS)  # as text, character for character
    assert await page.text_content("#conv-name") == PAYLOADS[1]

    # 2. in an e-mail: subject, sender name, plain text and an HTML body, through real SMTP
    mail = EmailMessage()
    mail["From"] = formataddr((PAYLOADS[1], "mallory@example.com"))
    mail["To"] = stack.info["inbox"]
    mail["Subject"] = PAYLOADS[0] + " سفارش"
    mail["Message-ID"] = "<console-xss-mail@example.com>"
    mail.set_content("\n".join(PAYLOADS))
    html = (
        "<html><head><meta http-equiv=refresh content='0;url=javascript:alert(9)'></head>"
        "<body><p>Hello <b>agent</b></p>"
        + "".join(PAYLOADS)
        + f"<img src='http://{REMOTE}/pixel.png'><form action='http://{REMOTE}/'><input></form>"
        "<p>سلام</p></body></html>"
    )
    mail.add_alternative(html, subtype="html")
    invoice = "فاکتور-۱۲۳۴.txt"
    mail.add_attachment(b"invoice 1234\n", maintype="text", subtype="plain", filename=invoice)
    host, port = stack.info["smtp"].rsplit(":", 1)

    def send() -> None:
        with smtplib.SMTP(host, int(port), timeout=30) as smtp:
            smtp.send_message(mail)

    await asyncio.to_thread(send)
    await page.locator(".offer").wait_for(timeout=20_000)
    await page.keyboard.press("Enter")
    frame = page.locator("#timeline iframe.email")
    await frame.wait_for(timeout=10_000)
    assert await frame.get_attribute("sandbox") == ""  # no scripts, forms, popups, origin
    srcdoc = await frame.get_attribute("srcdoc") or ""
    assert "Hello <b>agent</b>" in srcdoc  # the sanitised HTML is what the frame shows
    assert "<script" not in srcdoc.lower() and "onerror" not in srcdoc.lower()
    subject = await page.locator("#timeline .item.in .subject").last.text_content()
    assert subject == PAYLOADS[0] + " سفارش"
    assert "default-src 'none'" in srcdoc  # the frame's own, narrower policy
    # (a frame locator waits for the frame's own document: right after the element appears
    # its frame may still be the initial about:blank)
    email_frame = page.frame_locator("#timeline iframe.email").last
    await email_frame.locator("body", has_text="Hello").wait_for(timeout=10_000)
    # …which still lets the console's mail stylesheet in (14px, not the browser's 16px)
    await expect(email_frame.locator("html")).to_have_css("font-size", "14px")
    # the attachment is a link that downloads the stored bytes under the name it had
    link = page.locator("#timeline .attachments a", has_text=invoice)
    async with page.expect_download() as info:
        await link.click()
    download = await info.value
    assert download.suggested_filename == invoice
    assert Path(await download.path()).read_bytes() == b"invoice 1234\n"
    await asyncio.sleep(1.0)  # anything that could fire, has
    await page.screenshot(path=shot("xss_en"), animations="disabled")

    for f in page.frames:
        assert await f.evaluate("window.__xss") is None, f.url
    assert await page.evaluate("window.__csp") == []
    injected = await page.evaluate(
        "document.querySelectorAll('#timeline script, #timeline svg, [onerror], [onload],"
        " #timeline a[href^=javascript], #customer img, #conv-list img:not(.chan)').length"
    )
    assert injected == 0
    assert not watch.dialogs, watch.dialogs
    assert not watch.errors, watch.errors
    # CSP kept the remote image from loading: never fetched, or stopped by the policy itself
    assert not watch.loaded, watch.loaded
    # (Chromium names the reason net::ERR_BLOCKED_BY_CSP, or just "csp" when the frame's own
    # policy stops it first)
    assert all("csp" in r.lower() for r in watch.remote), watch.remote
    blocked = [t for kind, t, url in watch.console if url == "about:srcdoc" and REMOTE in t]
    assert blocked, watch.console

    # an offer she declines (D) leaves her screen and passes her by (being the only one
    # online, it may come back to her after everyone else: as a new offer)
    await admin.message(
        source_id="console-decline", sender=[{"kind": "api", "value": "decliner"}], text="hi"
    )
    await page.locator(".offer").wait_for(timeout=15_000)
    declined = await page.get_attribute(".offer", "data-offer")
    await page.keyboard.press("d")
    await page.locator(f'.offer[data-offer="{declined}"]').wait_for(state="detached")
    decliner = await admin.json("GET", "/api/v1/customers", params={"identifier": "api:decliner"})
    listed = await admin.json(
        "GET", "/api/v1/conversations", params={"scope": "all", "customer_id": decliner["id"]}
    )
    [conv] = listed["conversations"]
    assert conv["passed"] == [xena["id"]] and conv["offer_id"] != declined
    await page.context.close()


async def _is(value: Awaitable[Any], expected: Any) -> bool:
    return bool(await value == expected)


async def _state(admin: Admin, conv_id: str) -> str:
    return str((await admin.conversation(conv_id))["state"])


async def _where(value: Awaitable[Any], ok: Callable[[Any], bool]) -> Any:
    got = await value
    return got if ok(got) else None

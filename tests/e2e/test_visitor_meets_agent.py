"""The whole story in two browsers: a visitor in the web chat widget on a shop's page, an agent
in the console — both real Chromium contexts against one `omnihub up`.

The visitor writes in Persian; the console pops the offer up; the agent accepts with the
keyboard, sees the message on the timeline and replies from the reply box; the visitor sees
the reply live in the widget; a reload keeps the chat on both sides. Screenshots of both
sides go to tests/artifacts/ (gitignored).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from aiohttp import web
from playwright.async_api import Browser

from tests.e2e.browser import ARTIFACTS, chromium
from tests.e2e.test_console import (
    Admin,
    open_console,
    sign_in,
    until,
)
from tests.e2e.test_user_story import PORT_FLAGS, Stack
from tests.e2e.test_webchat_widget import (
    QUESTION,
    W,
    bubbles,
    open_widget,
    shop_page,
)
from tests.peers import free_port

pytestmark = pytest.mark.e2e

ANSWER = "سلام علی جان، سفارش شما فردا می‌رسد. Tracking: IR-7731"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("both") / "data", {f: free_port() for f in PORT_FLAGS})
    s.start()
    yield s
    if s.proc and s.proc.poll() is None:
        s.interrupt()


@pytest.fixture(scope="module")
async def shop(stack: Stack) -> AsyncIterator[str]:
    widget = stack.info["webchat"] + "/widget.js"

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=shop_page("fa", widget), content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://localhost:{port}/"  # another origin than the connector's
    await runner.cleanup()


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


async def test_a_visitor_in_the_widget_and_an_agent_in_the_console_talk_in_persian(
    stack: Stack, shop: str, browser: Browser, admin: Admin
) -> None:
    maryam = await admin.agent("مریم کریمی", "maryam@example.com")
    console, watch = await open_console(browser, stack, "fa-IR")
    visitor_ctx = await browser.new_context(
        viewport={"width": 900, "height": 700}, locale="fa-IR", timezone_id="Asia/Tehran"
    )
    visitor = await visitor_ctx.new_page()
    errors: list[str] = []
    visitor.on("pageerror", lambda e: errors.append(str(e)))
    try:
        await sign_in(console, "maryam@example.com")
        await console.click("[data-presence=online]")
        await until("agent online", lambda: _is(admin.status_of(maryam["id"]), "online"))

        # the visitor writes on the shop's page
        await open_widget(visitor, shop)
        await visitor.locator(f"{W} textarea").fill(QUESTION)
        await visitor.locator(f"{W} textarea").press("Enter")
        await visitor.locator(f"{W} .m.in[data-id]").wait_for(timeout=15_000)

        # the console pops the offer up with the visitor's words and the web chat icon
        offer = console.locator(".offer")
        await offer.wait_for(timeout=30_000)
        assert await offer.locator(".preview").text_content() == QUESTION
        assert await offer.locator("img.chan").get_attribute("src") == "/console/icons/webchat.svg"
        await console.screenshot(path=str(ARTIFACTS / "both_offer_console_fa.png"))
        await console.keyboard.press("Enter")  # accept
        incoming = console.locator("#timeline .item.in .text", has_text=QUESTION)
        await incoming.wait_for(timeout=15_000)
        conv_id = await console.locator(".conv-row.open").get_attribute("data-id")
        assert conv_id and (await admin.conversation(conv_id))["assignee"] == maryam["id"]
        assert (await admin.conversation(conv_id))["channel"] == "webchat"

        # the agent replies from the console; the visitor sees it live
        await console.keyboard.press("r")
        await console.keyboard.type(ANSWER)
        await console.keyboard.press("Control+Enter")
        answer = visitor.locator(f"{W} .m.out", has_text="IR-7731")
        await answer.wait_for(timeout=20_000)
        assert await answer.evaluate("n => getComputedStyle(n).direction") == "rtl"
        await console.locator("#timeline .item.out .text", has_text="IR-7731").wait_for(
            timeout=15_000
        )
        await visitor.screenshot(path=str(ARTIFACTS / "both_widget_fa.png"))
        await console.screenshot(path=str(ARTIFACTS / "both_conversation_console_fa.png"))

        # a reload keeps the chat on both sides
        await visitor.reload()
        await visitor.locator(f"{W} .l").click()
        await visitor.wait_for_selector(f'{W} .w[data-status="online"]', timeout=20_000)
        await visitor.locator(f"{W} .m.out", has_text="IR-7731").wait_for(timeout=10_000)
        assert (await bubbles(visitor))[:2] == [("in", QUESTION), ("out", ANSWER)]
        await console.reload()
        await console.locator(f'.conv-row[data-id="{conv_id}"]').click()
        await console.locator("#timeline .item.out .text", has_text="IR-7731").wait_for(
            timeout=15_000
        )
        assert not errors, errors
        assert not watch.dialogs and not watch.errors, (watch.dialogs, watch.errors)
    finally:
        await visitor_ctx.close()
        await console.context.close()


async def _is(value: object, expected: str) -> bool:
    return (await value) == expected  # type: ignore[misc]

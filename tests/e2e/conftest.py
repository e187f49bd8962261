"""What the browser tests share: one Chromium per test module.

Debian's /usr/bin/chromium driven by Playwright (never `playwright install`), with the flags
INFRA.md lists. If it cannot start, the tests that asked for it fail; they never skip.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
"""screenshots the browser tests save (gitignored); look at them"""
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
]


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield b
        await b.close()

"""Fixtures the browser tests share (each module still has its own stack and browser)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import pytest

if TYPE_CHECKING:
    from tests.e2e.test_console import Admin
    from tests.e2e.test_user_story import Stack


@pytest.fixture
async def admin(stack: Stack) -> AsyncIterator[Admin]:
    """The API token's side of the story, on the module's stack."""
    from tests.e2e.test_console import Admin

    token = Path(stack.info["token_file"]).read_text().strip()
    async with aiohttp.ClientSession(
        base_url=stack.info["api"], headers={"Authorization": f"Bearer {token}"}
    ) as session:
        yield Admin(session)
